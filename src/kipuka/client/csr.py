"""Keys and CSRs on the client side.

A CSR can be handed to the client ready-made (DER, PEM or a cryptography
object), or as a `CsrSpec`: the key and the names, signed by the client at
the moment of sending. The second form is what channel binding needs (the
challengePassword carries the tls-unique of the very connection the CSR is
sent on, RFC 7030 3.5) and what serverkeygen delivery options use (the client
adds the key-identifier attribute naming the key to encrypt to).
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from typing import Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID

from kipuka import pq
from kipuka.client.errors import EstError

KEY_TYPES = ("ec-p256", "ec-p384", "ec-p521", "rsa2048", "rsa3072", "rsa4096", "ed25519", *pq.KEY_TYPES)
ASYMMETRIC_DECRYPT_KEY_ID = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.54")  # RFC 7030 4.4.1.2
DECRYPT_KEY_ID = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.37")             # RFC 7030 4.4.1.1

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, pq.PrivateKey]


def generate_key(kind: str = "ec-p256") -> PrivateKey:
    kind = kind.lower()
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ec-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind.startswith("rsa") and kind[3:].isdigit() and int(kind[3:]) >= 2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind in pq.KEY_TYPES:
        return pq.generate(kind)
    raise EstError(f"unknown key type {kind!r}; choose from {', '.join(KEY_TYPES)}")


def default_hash(key: object, preferred: str | None = None) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey) or pq.is_mldsa(key):
        return None  # pure signatures: the algorithm hashes inside (ML-DSA: RFC 9881)
    if preferred in ("sha384", "sha512"):
        return hashes.SHA384() if preferred == "sha384" else hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def parse_san(text: str) -> x509.GeneralName:
    """"dns:host", "ip:10.0.0.1", "email:a@b", "uri:urn:x"; a bare value is a DNS name or an IP."""
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in ("dns", "ip", "email", "uri"):
        kind = kind.lower()
    else:
        kind, value = "", text
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        if kind == "ip":
            raise EstError(f"{value!r} is not an IP address") from None
        return x509.DNSName(value)


@dataclass
class CsrSpec:
    """What to put in a CSR; `build()` signs it (with a challengePassword when given one)."""

    key: PrivateKey
    subject: x509.Name
    sans: Sequence[x509.GeneralName] = ()
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()
    attributes: Sequence[tuple[x509.ObjectIdentifier, bytes, _ASN1Type | None]] = ()
    hash_name: str | None = None
    challenge_password: str | None = None

    @classmethod
    def for_names(cls, key: PrivateKey, common_name: str | None, sans: Sequence[str | x509.GeneralName] = (),
                  **kwargs) -> "CsrSpec":
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
        names = [parse_san(s) if isinstance(s, str) else s for s in sans]
        return cls(key, subject, names, **kwargs)

    @classmethod
    def like_certificate(cls, key: PrivateKey, cert: x509.Certificate, **kwargs) -> "CsrSpec":
        """Same subject and subjectAltName as `cert` (what /simplereenroll requires)."""
        try:
            sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        return cls(key, cert.subject, sans, **kwargs)

    @classmethod
    def from_csr(cls, key: PrivateKey, csr: x509.CertificateSigningRequest) -> "CsrSpec":
        """The names and extensions of a CSR made earlier, to be signed again (a resumed request).

        A challengePassword is left out: a channel-bound one belongs to the TLS
        session it was made for, and is remade for the new one.
        """
        sans: list[x509.GeneralName] = []
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        for ext in csr.extensions:
            if isinstance(ext.value, x509.SubjectAlternativeName):
                sans = list(ext.value)
            else:
                extensions.append((ext.value, ext.critical))
        return cls(key, csr.subject, sans, extensions)

    def with_attribute(self, oid: x509.ObjectIdentifier, value: bytes, tag: _ASN1Type | None = None) -> "CsrSpec":
        return CsrSpec(self.key, self.subject, self.sans, self.extensions,
                       [*self.attributes, (oid, value, tag)], self.hash_name, self.challenge_password)

    def build(self, tls_unique: bytes | None = None) -> x509.CertificateSigningRequest:
        builder = x509.CertificateSigningRequestBuilder().subject_name(self.subject)
        if self.sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(self.sans)), critical=False)
        for ext, critical in self.extensions:
            builder = builder.add_extension(ext, critical=critical)
        password = self.challenge_password
        if tls_unique is not None:
            # RFC 7030 3.5: the base64 of tls-unique goes into challengePassword.
            password = base64.b64encode(tls_unique).decode("ascii")
        if password is not None:
            builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, password.encode("utf-8"))
        for oid, value, tag in self.attributes:
            builder = builder.add_attribute(oid, value, _tag=tag) if tag is not None else \
                builder.add_attribute(oid, value)
        return builder.sign(self.key, default_hash(self.key, self.hash_name))  # type: ignore[arg-type]


CsrInput = Union[CsrSpec, x509.CertificateSigningRequest, bytes, str]


@dataclass
class CsrSource:
    """A CSR input normalised: DER on demand (per connection), and its public key."""

    spec: CsrSpec | None = None
    fixed: x509.CertificateSigningRequest | None = None
    _last: x509.CertificateSigningRequest | None = field(default=None, repr=False)
    _bound_to: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, value: CsrInput) -> "CsrSource":
        if isinstance(value, CsrSpec):
            return cls(spec=value)
        if isinstance(value, x509.CertificateSigningRequest):
            return cls(fixed=value)
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, (bytes, bytearray)):
            return cls(fixed=load_csr(bytes(value)))
        raise TypeError(f"CSR must be a CsrSpec, a CertificateSigningRequest, or DER/PEM bytes, not {type(value)}")

    @property
    def public_key(self):
        if self.spec is not None:
            return self.spec.key.public_key()
        assert self.fixed is not None
        return self.fixed.public_key()

    @property
    def can_bind(self) -> bool:
        return self.spec is not None

    def der(self, tls_unique: bytes | None = None) -> bytes:
        """The CSR to send; a CsrSpec is signed once, and again only for a new tls-unique.

        Repeating the same bytes matters: a request answered 202 or 401 is sent
        again as it was (servers may match the retry by CSR).
        """
        if self.spec is None:
            assert self.fixed is not None
            return self.fixed.public_bytes(serialization.Encoding.DER)
        if self._last is None or self._bound_to != tls_unique:
            self._last = self.spec.build(tls_unique)
            self._bound_to = tls_unique
        return self._last.public_bytes(serialization.Encoding.DER)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        if data[:1] == b"\x30":
            return x509.load_der_x509_csr(data)
        return x509.load_der_x509_csr(base64.b64decode(b"".join(data.split())))
    except ValueError as exc:
        raise EstError(f"not a PKCS#10 CSR: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return serialization.load_pem_private_key(data, password)  # type: ignore[return-value]
        return serialization.load_der_private_key(data, password)  # type: ignore[return-value]
    except (ValueError, TypeError) as exc:
        raise EstError(f"cannot load private key: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
