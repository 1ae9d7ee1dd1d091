"""CMS SignedData (RFC 5652) reading, verification and signing for CMC.

cryptography cannot verify a SignedData nor sign one whose eContentType is not
id-data, so the structures are read and written here (pyasn1 / a small DER
writer) and only the primitives come from cryptography.

Verification of one SignerInfo (RFC 5652 §5.4, §5.6):
  * signedAttrs MUST be present (eContentType is not id-data), with exactly one
    content-type attribute equal to eContentType and exactly one
    message-digest attribute equal to digestAlgorithm(eContent);
  * the signature is checked over the DER of the signed attributes as received,
    with the IMPLICIT [0] tag replaced by SET OF (0x31);
  * algorithms: RSA PKCS#1 v1.5 (rsaEncryption or sha*WithRSAEncryption),
    RSASSA-PSS (MGF1, trailerField 1), ECDSA with SHA-224/256/384/512,
    Ed25519 and ML-DSA-44/65/87 (RFC 9882: pure, no parameters; kipuka signs
    with SHA-512 as the digest); digests SHA-224/256/384/512. SHA-1 anywhere is badAlg (so is Ed448,
    whose RFC 8419 digest SHAKE256 is not offered).

Failure classes: undecodable or structurally wrong -> badRequest; unsupported
algorithm -> badAlg; signer not identifiable -> badCertId; anything about the
signed attributes, digest or signature -> badMessageCheck.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ, useful
from pyasn1_modules import rfc4055, rfc5280

from kipuka import pq
from kipuka.cmc import asn1, der, oids
from kipuka.cmc.errors import CMCFailInfo, CmcError

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
             | pq.PublicKey)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | pq.PrivateKey
PUBLIC_KEY_CLASSES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey,
                      *pq.PUBLIC_KEY_CLASSES)
PRIVATE_KEY_CLASSES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                       *pq.PRIVATE_KEY_CLASSES)

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    oids.ID_SHA224: hashes.SHA224, oids.ID_SHA256: hashes.SHA256,
    oids.ID_SHA384: hashes.SHA384, oids.ID_SHA512: hashes.SHA512,
}
DIGEST_OID: dict[str, str] = {h.name: o for o, h in DIGESTS.items()}
RSA_PKCS1: dict[str, type[hashes.HashAlgorithm]] = {
    oids.SHA224_WITH_RSA: hashes.SHA224, oids.SHA256_WITH_RSA: hashes.SHA256,
    oids.SHA384_WITH_RSA: hashes.SHA384, oids.SHA512_WITH_RSA: hashes.SHA512,
}
ECDSA: dict[str, type[hashes.HashAlgorithm]] = {
    oids.ECDSA_SHA224: hashes.SHA224, oids.ECDSA_SHA256: hashes.SHA256,
    oids.ECDSA_SHA384: hashes.SHA384, oids.ECDSA_SHA512: hashes.SHA512,
}
WEAK = {oids.ID_SHA1, oids.SHA1_WITH_RSA, oids.ECDSA_SHA1}


def _alg(message: str, ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badAlg, ids, message)


def _check(message: str, ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badMessageCheck, ids, message)


def digest_class(alg_oid: str, ids: Iterable[int] = ()) -> type[hashes.HashAlgorithm]:
    if alg_oid in WEAK:
        raise _alg("SHA-1 is not accepted", ids)
    try:
        return DIGESTS[alg_oid]
    except KeyError:
        raise _alg(f"unsupported digest algorithm {alg_oid}", ids) from None


def _params(alg) -> bytes | None:
    p = alg["parameters"]
    if not p.isValue:
        return None
    raw = p.asOctets()
    return None if raw == der.null() else raw


def _pss(params: bytes | None, ids: Iterable[int]) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    if params is None:
        raise _alg("RSASSA-PSS without parameters (SHA-1 default) is not accepted", ids)
    p = der.decode(params, rfc4055.RSASSA_PSS_params(), "RSASSA-PSS parameters", ids)
    if not p["hashAlgorithm"].isValue:
        raise _alg("RSASSA-PSS with the SHA-1 default hash is not accepted", ids)
    hash_cls = digest_class(str(p["hashAlgorithm"]["algorithm"]), ids)
    mgf_hash = hashes.SHA1
    if p["maskGenAlgorithm"].isValue:
        mga = p["maskGenAlgorithm"]
        if str(mga["algorithm"]) != oids.MGF1 or not mga["parameters"].isValue:
            raise _alg("RSASSA-PSS mask generation function is not MGF1", ids)
        inner = der.decode(mga["parameters"].asOctets(), rfc5280.AlgorithmIdentifier(), "MGF1 hash", ids)
        mgf_hash = digest_class(str(inner["algorithm"]), ids)
    if mgf_hash is hashes.SHA1:
        raise _alg("RSASSA-PSS with MGF1-SHA-1 is not accepted", ids)
    if int(p["trailerField"]) != 1:
        raise _alg("RSASSA-PSS trailerField must be 1", ids)
    salt = int(p["saltLength"])
    if not 0 <= salt <= 1024:
        raise _alg("RSASSA-PSS salt length out of range", ids)
    return padding.PSS(mgf=padding.MGF1(mgf_hash()), salt_length=salt), hash_cls()


def verify_signature(key: PublicKey, sig_alg: str, sig_params: bytes | None, signature: bytes, data: bytes,
                     *, default_hash: type[hashes.HashAlgorithm] | None = None,
                     ids: Iterable[int] = ()) -> bool:
    """Check `signature` over `data`. Unsupported algorithm or key mismatch -> CmcError(badAlg).

    `default_hash` is the hash for algorithm identifiers that name only the key
    type (rsaEncryption, id-ecPublicKey), as CMS signers such as OpenSSL use them
    with the SignerInfo's digestAlgorithm (RFC 5652 §5.4, RFC 3370 §3.2).
    """
    ids = tuple(ids)
    if sig_alg in WEAK:
        raise _alg("SHA-1 signatures are not accepted", ids)
    try:
        if sig_alg in RSA_PKCS1 or sig_alg == oids.RSA_ENCRYPTION:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _alg("RSA signature algorithm with a non-RSA key", ids)
            h = RSA_PKCS1.get(sig_alg) or default_hash
            if h is None:
                raise _alg("rsaEncryption signature with no digest algorithm", ids)
            key.verify(signature, data, padding.PKCS1v15(), h())
        elif sig_alg == oids.RSASSA_PSS:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _alg("RSASSA-PSS with a non-RSA key", ids)
            pad, h = _pss(sig_params, ids)
            key.verify(signature, data, pad, h)
        elif sig_alg in ECDSA or sig_alg == oids.EC_PUBLIC_KEY:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _alg("ECDSA signature algorithm with a non-EC key", ids)
            h = ECDSA.get(sig_alg) or default_hash
            if h is None:
                raise _alg("id-ecPublicKey signature with no digest algorithm", ids)
            key.verify(signature, data, ec.ECDSA(h()))
        elif sig_alg == oids.ED25519:
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise _alg("Ed25519 signature with a non-Ed25519 key", ids)
            key.verify(signature, data)
        elif sig_alg == oids.ED448:
            if not isinstance(key, ed448.Ed448PublicKey):
                raise _alg("Ed448 signature with a non-Ed448 key", ids)
            key.verify(signature, data)
        elif sig_alg in pq.TYPE_BY_OID:
            if pq.key_type(key) != pq.TYPE_BY_OID[sig_alg]:
                raise _alg(f"{pq.TYPE_BY_OID[sig_alg]} signature with another kind of key", ids)
            if sig_params is not None:
                raise _alg("ML-DSA signature algorithm with parameters (RFC 9882: absent)", ids)
            key.verify(signature, data)  # type: ignore[union-attr]
        else:
            raise _alg(f"unsupported signature algorithm {sig_alg}", ids)
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def load_public_key(spki_der: bytes, ids: Iterable[int] = ()) -> PublicKey:
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise CmcError(CMCFailInfo.badRequest, ids, "unreadable or unsupported public key") from exc
    if not isinstance(key, PUBLIC_KEY_CLASSES):
        raise CmcError(CMCFailInfo.badAlg, ids, "unsupported public key type")
    return key


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: PublicKey, b: PublicKey) -> bool:
    return spki_der(a) == spki_der(b)


def name_from_der(name_der: bytes) -> x509.Name | None:
    """An x509.Name from a DER Name, via cryptography's own parser (no signature is checked).

    cryptography has no loader for a bare Name, so the Name is placed as the
    subject of a throwaway CSR structure and read back. None if it does not parse.
    """
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200"
                         "04" + "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                         "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
    cri = der.seq(der.integer(0), name_der, spki, b"\xa0\x00")
    csr = der.seq(cri, der.algorithm(oids.ECDSA_SHA256), der.bit_string(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    try:
        return x509.load_der_x509_csr(csr).subject
    except Exception:  # noqa: BLE001 - any parse failure means "not a Name we can show"
        return None


def name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class SignerId:
    """SignerIdentifier (RFC 5652 §5.3): issuerAndSerialNumber or subjectKeyIdentifier."""

    issuer_der: bytes | None = None
    serial_number: int | None = None
    subject_key_identifier: bytes | None = None

    @property
    def kind(self) -> str:
        return "subjectKeyIdentifier" if self.subject_key_identifier is not None else "issuerAndSerialNumber"

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der) if self.issuer_der is not None else None

    def matches(self, cert: x509.Certificate) -> bool:
        if self.subject_key_identifier is not None:
            ski = cert_ski(cert)
            if ski is None:  # no extension: the RFC 5280 §4.2.1.2 method (1) value, as OpenSSL computes it
                try:
                    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]
                except (ValueError, UnsupportedAlgorithm, TypeError):
                    return False
            return ski == self.subject_key_identifier
        return cert.serial_number == self.serial_number and name_der(cert.issuer) == self.issuer_der


def cert_ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


@dataclass(frozen=True)
class RawSignerInfo:
    index: int
    sid: SignerId
    digest_algorithm: str
    signed_attrs: bytes | None           # DER SET OF Attribute (re-tagged 0x31), or None
    signature_algorithm: str
    signature_params: bytes | None
    signature: bytes


@dataclass(frozen=True)
class RawSignedData:
    """A decoded, not yet verified, SignedData."""

    econtent_type: str
    econtent: bytes | None
    certificates: tuple[x509.Certificate, ...]
    other_certificates: tuple[bytes, ...]  # attribute / other certificate choices, raw
    crls: tuple[bytes, ...]
    signer_infos: tuple[RawSignerInfo, ...]


def open_content_info(data: bytes, ids: Iterable[int] = ()) -> tuple[str, bytes]:
    """(contentType, content TLV) of a ContentInfo."""
    ci = der.decode(data, asn1.ContentInfo(), "ContentInfo", ids)
    return str(ci["contentType"]), ci["content"].asOctets()


def read_signed_data(content: bytes, ids: Iterable[int] = ()) -> RawSignedData:
    ids = tuple(ids)
    sd = der.decode(content, asn1.SignedData(), "SignedData", ids)
    eci = sd["encapContentInfo"]
    econtent = bytes(eci["eContent"]) if eci["eContent"].isValue else None
    certs: list[x509.Certificate] = []
    others: list[bytes] = []
    if sd["certificates"].isValue:
        for item in sd["certificates"]:
            raw = item.asOctets()
            if der.tag_of(raw) != 0x30:
                others.append(raw)
                continue
            try:
                certs.append(x509.load_der_x509_certificate(raw))
            except ValueError as exc:
                raise der.bad("unreadable certificate in the SignedData certificate set", ids) from exc
    crls = tuple(item.asOctets() for item in sd["crls"]) if sd["crls"].isValue else ()
    infos: list[RawSignerInfo] = []
    for i, si in enumerate(sd["signerInfos"]):
        sid_choice = si["sid"]
        if sid_choice.getName() == "subjectKeyIdentifier":
            sid = SignerId(subject_key_identifier=bytes(sid_choice["subjectKeyIdentifier"]))
        else:
            iasn = sid_choice["issuerAndSerialNumber"]
            sid = SignerId(issuer_der=der_encoder.encode(iasn["issuer"]), serial_number=int(iasn["serialNumber"]))
        attrs = si["signedAttrs"]
        signed = (der.tlv(0x31, attrs.asOctets())) if attrs.isValue else None
        infos.append(RawSignerInfo(
            index=i, sid=sid,
            digest_algorithm=str(si["digestAlgorithm"]["algorithm"]),
            signed_attrs=signed,
            signature_algorithm=str(si["signatureAlgorithm"]["algorithm"]),
            signature_params=_params(si["signatureAlgorithm"]),
            signature=bytes(si["signature"]),
        ))
    return RawSignedData(
        econtent_type=str(eci["eContentType"]), econtent=econtent, certificates=tuple(certs),
        other_certificates=tuple(others), crls=crls, signer_infos=tuple(infos))


@dataclass(frozen=True)
class VerifiedSigner:
    """One SignerInfo whose signature verified."""

    sid: SignerId
    public_key: PublicKey
    certificate: x509.Certificate | None   # the signer's certificate from the SignedData set
    request_body_part_id: int | None        # set when signed by the key of a request in the PKIData
    digest_algorithm: str
    signature_algorithm: str
    signing_time: dt.datetime | None
    signed_attributes: tuple[tuple[str, tuple[bytes, ...]], ...]


def _signed_attributes(raw: bytes, ids: tuple[int, ...]) -> list[tuple[str, tuple[bytes, ...]]]:
    attrs = der.decode(raw, asn1.Attributes(), "signed attributes", ids)
    out = []
    for a in attrs:
        out.append((str(a["attrType"]), tuple(v.asOctets() for v in a["attrValues"])))
    return out


def _single(attrs: list[tuple[str, tuple[bytes, ...]]], oid: str, name: str, ids: tuple[int, ...]) -> bytes | None:
    found = [values for t, values in attrs if t == oid]
    if not found:
        return None
    if len(found) > 1 or len(found[0]) != 1:
        raise _check(f"the {name} signed attribute must occur once with one value (RFC 5652 §11)", ids)
    return found[0][0]


def _signing_time(value: bytes, ids: tuple[int, ...]) -> dt.datetime:
    tag = der.tag_of(value)
    spec = useful.UTCTime() if tag == 0x17 else useful.GeneralizedTime() if tag == 0x18 else None
    if spec is None:
        raise _check("signing-time is not a Time", ids)
    t = der.decode(value, spec, "signing-time", ids)
    try:
        return t.asDateTime.astimezone(dt.timezone.utc)
    except Exception as exc:  # noqa: BLE001 - pyasn1 raises various errors for bad times
        raise _check("unreadable signing-time", ids) from exc


KeyLookup = Callable[[SignerId], tuple[PublicKey, int] | None]


def verify_signer(sd: RawSignedData, si: RawSignerInfo, *, key_lookup: KeyLookup | None = None,
                  ids: Iterable[int] = ()) -> VerifiedSigner:
    """Verify one SignerInfo of `sd`; raise CmcError on any failure.

    The signer is looked up among the SignedData certificates by its sid; if
    none matches, `key_lookup(sid)` may name a (public key, bodyPartID) from the
    content itself (RFC 5272 §3.2: a PKIData signed with the key of one of its
    certification requests).
    """
    ids = tuple(ids)
    if sd.econtent is None:
        raise der.bad("detached content is not supported: eContent is absent", ids)
    hash_cls = digest_class(si.digest_algorithm, ids)
    if si.signed_attrs is None:
        raise _check("signed attributes are absent (RFC 5652 §5.3 requires them when the "
                     "content type is not id-data)", ids)
    attrs = _signed_attributes(si.signed_attrs, ids)
    ct = _single(attrs, oids.ID_CONTENT_TYPE, "content-type", ids)
    if ct is None:
        raise _check("the content-type signed attribute is missing", ids)
    ct_oid = der.decode(ct, univ.ObjectIdentifier(), "content-type attribute", ids)
    if str(ct_oid) != sd.econtent_type:
        raise _check("the content-type signed attribute differs from eContentType", ids)
    md = _single(attrs, oids.ID_MESSAGE_DIGEST, "message-digest", ids)
    if md is None:
        raise _check("the message-digest signed attribute is missing", ids)
    md_value = bytes(der.decode(md, univ.OctetString(), "message-digest attribute", ids))
    h = hashes.Hash(hash_cls())
    h.update(sd.econtent)
    if h.finalize() != md_value:
        raise _check("message-digest does not match the content", ids)
    st = _single(attrs, oids.ID_SIGNING_TIME, "signing-time", ids)
    signing_time = _signing_time(st, ids) if st is not None else None

    cert = next((c for c in sd.certificates if si.sid.matches(c)), None)
    request_id: int | None = None
    if cert is not None:
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise _alg("unsupported public key in the signer certificate", ids) from exc
    else:
        found = key_lookup(si.sid) if key_lookup is not None else None
        if found is None:
            raise CmcError(CMCFailInfo.badCertId, ids,
                           f"no certificate in the SignedData matches the signer identifier ({si.sid.kind})")
        key, request_id = found
    if not isinstance(key, PUBLIC_KEY_CLASSES):
        raise _alg("unsupported signer key type", ids)
    if not verify_signature(key, si.signature_algorithm, si.signature_params, si.signature, si.signed_attrs,
                            default_hash=hash_cls, ids=ids):
        raise _check("the signature does not verify", ids)
    return VerifiedSigner(sid=si.sid, public_key=key, certificate=cert, request_body_part_id=request_id,
                          digest_algorithm=si.digest_algorithm, signature_algorithm=si.signature_algorithm,
                          signing_time=signing_time, signed_attributes=tuple(attrs))


# ----------------------------------------------------------------------------- signing

@dataclass
class CmsSigner:
    """A key that signs a CMS SignedData, and how the SignerInfo names it.

    `sid` is "issuerAndSerialNumber" (needs `certificate`) or
    "subjectKeyIdentifier" (the certificate's SKI extension, or `ski` for a key
    with no certificate: RFC 5272 §3.2, a PKIData signed with the key of its own
    certification request). `hash` defaults to SHA-256, SHA-384 for P-384 and
    SHA-512 for P-521, Ed25519 and ML-DSA. `rsa_pss` signs RSA keys with RSASSA-PSS
    (salt = hash length) instead of PKCS#1 v1.5. `chain` certificates are added
    to the SignedData certificate set with `certificate`.
    """

    key: PrivateKey
    certificate: x509.Certificate | None = None
    sid: str = "issuerAndSerialNumber"
    ski: bytes | None = None
    hash: hashes.HashAlgorithm | None = None
    rsa_pss: bool = False
    chain: Sequence[x509.Certificate] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.key, PRIVATE_KEY_CLASSES):
            raise TypeError("CmsSigner needs an RSA, EC, Ed25519 or ML-DSA private key")
        if self.sid not in ("issuerAndSerialNumber", "subjectKeyIdentifier"):
            raise ValueError("sid must be 'issuerAndSerialNumber' or 'subjectKeyIdentifier'")
        if self.certificate is None and (self.sid != "subjectKeyIdentifier" or self.ski is None):
            raise ValueError("a signer without a certificate needs sid='subjectKeyIdentifier' and ski")
        if self.certificate is not None and spki_der(self.certificate.public_key()) != spki_der(self.key.public_key()):
            raise ValueError("the certificate does not belong to the key")
        if self.sid == "subjectKeyIdentifier" and self.ski is None:
            self.ski = cert_ski(self.certificate) or x509.SubjectKeyIdentifier.from_public_key(
                self.key.public_key()).digest
        if self.hash is None:
            self.hash = default_hash(self.key)

    def sid_der(self) -> bytes:
        if self.sid == "subjectKeyIdentifier":
            return der.tlv(0x80, self.ski or b"")
        cert = self.certificate
        assert cert is not None
        return der.seq(name_der(cert.issuer), der.integer(cert.serial_number))

    def digest_algorithm_der(self) -> bytes:
        assert self.hash is not None
        return der.algorithm(DIGEST_OID[self.hash.name])

    def signature_algorithm_der(self) -> bytes:
        assert self.hash is not None
        return signature_algorithm_der(self.key, self.hash, self.rsa_pss)

    def sign(self, data: bytes) -> bytes:
        assert self.hash is not None
        return sign_bytes(self.key, self.hash, self.rsa_pss, data)


def signature_algorithm_der(key: PrivateKey, h: hashes.HashAlgorithm, rsa_pss: bool = False) -> bytes:
    """The AlgorithmIdentifier `sign_bytes` produces signatures for."""
    if isinstance(key, rsa.RSAPrivateKey):
        if rsa_pss:
            return der.algorithm(oids.RSASSA_PSS, pss_params(h))
        return der.algorithm({v.name: k for k, v in RSA_PKCS1.items()}[h.name], der.null())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return der.algorithm({v.name: k for k, v in ECDSA.items()}[h.name])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return der.algorithm(oids.ED25519)
    if pq.is_mldsa(key):
        return der.algorithm(pq.algorithm_oid(key))  # RFC 9882 §3.3: parameters absent
    raise TypeError("unsupported signing key")


def sign_bytes(key: PrivateKey, h: hashes.HashAlgorithm, rsa_pss: bool, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        pad = (padding.PSS(mgf=padding.MGF1(type(h)()), salt_length=h.digest_size) if rsa_pss
               else padding.PKCS1v15())
        return key.sign(data, pad, type(h)())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(type(h)()))
    if isinstance(key, ed25519.Ed25519PrivateKey) or pq.is_mldsa(key):
        return key.sign(data)  # type: ignore[union-attr]
    raise TypeError("unsupported signing key")


def default_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 500:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return hashes.SHA512()   # RFC 8419 §3: SHA-512 with Ed25519
    if pq.is_mldsa(key):
        return pq.cms_digest()   # RFC 9882 §3.3: SHA-512 with ML-DSA
    return hashes.SHA256()


def pss_params(h: hashes.HashAlgorithm) -> bytes:
    """RSASSA-PSS-params (RFC 4055 §3.1) with MGF1 over the same hash and salt = hash length."""
    hash_alg = der.algorithm(DIGEST_OID[h.name])
    mgf = der.algorithm(oids.MGF1, hash_alg)
    return der.seq(der.explicit(0, hash_alg), der.explicit(1, mgf), der.explicit(2, der.integer(h.digest_size)))


def signed_data(econtent_type: str, econtent: bytes, signers: Sequence[CmsSigner], *,
                certificates: Iterable[x509.Certificate] = (), signing_time: dt.datetime | None = None,
                include_signing_time: bool = True) -> bytes:
    """A DER ContentInfo(SignedData) over `econtent` (RFC 5652 §5), attached content.

    Signed attributes: content-type, message-digest and (unless disabled)
    signing-time. The certificate set holds each signer's certificate and chain
    plus `certificates`, de-duplicated and in DER SET OF order.
    """
    if not signers:
        raise ValueError("at least one signer is needed")
    when = signing_time or dt.datetime.now(dt.timezone.utc)
    cert_ders: dict[bytes, None] = {}
    for s in signers:
        for c in ([s.certificate] if s.certificate is not None else []) + list(s.chain):
            cert_ders[c.public_bytes(serialization.Encoding.DER)] = None
    for c in certificates:
        cert_ders[c.public_bytes(serialization.Encoding.DER)] = None
    digest_algs: dict[bytes, None] = {}
    infos = []
    for s in signers:
        assert s.hash is not None
        h = hashes.Hash(type(s.hash)())
        h.update(econtent)
        attrs = [
            der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of([der.oid(econtent_type)])),
            der.seq(der.oid(oids.ID_MESSAGE_DIGEST), der.set_of([der.octets(h.finalize())])),
        ]
        if include_signing_time:
            attrs.append(der.seq(der.oid(oids.ID_SIGNING_TIME), der.set_of([der.cms_time(when)])))
        signed_attrs = der.set_of(attrs)
        signature = s.sign(signed_attrs)
        digest_alg = s.digest_algorithm_der()
        digest_algs[digest_alg] = None
        version = 3 if s.sid == "subjectKeyIdentifier" else 1
        infos.append(der.seq(
            der.integer(version), s.sid_der(), digest_alg, der.retag(signed_attrs, 0xA0),
            s.signature_algorithm_der(), der.octets(signature)))
    parts = [
        der.integer(3),  # RFC 5652 §5.1: eContentType is not id-data
        der.set_of(digest_algs),
        der.seq(der.oid(econtent_type), der.explicit(0, der.octets(econtent))),
    ]
    if cert_ders:
        parts.append(der.tlv(0xA0, b"".join(sorted(cert_ders))))
    parts.append(der.set_of(infos))
    return der.seq(der.oid(oids.ID_SIGNED_DATA), der.explicit(0, der.seq(*parts)))
