"""Readable fields of certificates and keys, for the admin API (the console shows them as is).

Browsers have no X.509 parser, so the server decodes: the console never
parses DER in JavaScript.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

MAX_VALUE = 2000

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def key_description(key: Any) -> str:
    """'EC P-256', 'RSA 2048', 'Ed25519' ..."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def csr_key(csr_der: bytes) -> str:
    try:
        return key_description(x509.load_der_x509_csr(csr_der).public_key())
    except (ValueError, TypeError):
        return "unreadable"


def decoded(cert: x509.Certificate) -> dict[str, Any]:
    """The fields an officer checks, as text."""
    try:
        signature = cert.signature_algorithm_oid._name
    except AttributeError:
        signature = cert.signature_algorithm_oid.dotted_string
    return {
        "version": cert.version.name,
        "serial_hex": _colon_hex(cert.serial_number),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "public_key": key_description(cert.public_key()),
        "signature_algorithm": signature,
        "sha1": cert.fingerprint(hashes.SHA1()).hex(":"),  # what older tools display
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":"),
        "extensions": [{"name": _ext_name(e), "oid": e.oid.dotted_string, "critical": e.critical,
                        "value": _ext_value(e)[:MAX_VALUE]} for e in cert.extensions],
    }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _colon_hex(n: int) -> str:
    digits = format(n, "x")
    return bytes.fromhex(digits.rjust(len(digits) + len(digits) % 2, "0")).hex(":")


def _ext_name(e: x509.Extension[Any]) -> str:
    name = getattr(e.oid, "_name", "")
    return name if name and name != "Unknown OID" else e.oid.dotted_string


def _general_name(g: x509.GeneralName) -> str:
    kind = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
            x509.UniformResourceIdentifier: "URI", x509.DirectoryName: "DirName"}.get(type(g), type(g).__name__)
    value = g.value.rfc4514_string() if isinstance(g, x509.DirectoryName) else g.value
    return f"{kind}:{value}"


def _ext_value(e: x509.Extension[Any]) -> str:
    v = e.value
    if e.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME or e.oid == ExtensionOID.ISSUER_ALTERNATIVE_NAME:
        return ", ".join(_general_name(g) for g in v)
    if e.oid == ExtensionOID.BASIC_CONSTRAINTS:
        return f"CA:{str(v.ca).upper()}" + (f", pathlen:{v.path_length}" if v.path_length is not None else "")
    if e.oid == ExtensionOID.KEY_USAGE:
        names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign"]
        used = [n for n in names if getattr(v, n)]
        if v.key_agreement:
            used += [n for n in ("encipher_only", "decipher_only") if getattr(v, n)]
        return ", ".join(used)
    if e.oid == ExtensionOID.EXTENDED_KEY_USAGE:
        return ", ".join(getattr(o, "_name", o.dotted_string) for o in v)
    if e.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
        return v.digest.hex(":")
    if e.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
        return v.key_identifier.hex(":") if v.key_identifier else "(issuer and serial)"
    if e.oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
        return ", ".join(_general_name(g) for dp in v for g in (dp.full_name or []))
    if e.oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS:
        return ", ".join(f"{getattr(d.access_method, '_name', d.access_method.dotted_string)} "
                         f"{_general_name(d.access_location)}" for d in v)
    if isinstance(v, x509.UnrecognizedExtension):
        return v.value.hex()
    return str(v)


_ATTRIBUTES = {"1.2.840.113549.1.9.14": "extensionRequest", "1.2.840.113549.1.9.7": "challengePassword",
               "1.2.840.113549.1.9.16.2.54": "asymmetricDecryptKeyIdentifier",
               "1.2.840.113549.1.9.16.2.37": "decryptKeyIdentifier"}


def _attribute_name(oid: x509.ObjectIdentifier) -> str:
    name = _ATTRIBUTES.get(oid.dotted_string) or getattr(oid, "_name", "")
    return name if name and name != "Unknown OID" else oid.dotted_string


def decoded_csr(csr_der: bytes) -> dict[str, Any]:
    """What an officer checks before approving: names, key, requested extensions, signature, linking.

    `linked` says whether the CSR carries a challengePassword, which kipuka accepts only when it
    equals the TLS session's channel binding (RFC 7030 §3.5): the request was made on that session.
    A request from a Full CMC CRMF message is no PKCS#10 CSR: only its key is shown then.
    """
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        return {"readable": False, "subject": "", "sans": [], "public_key": csr_key(csr_der),
                "signature_algorithm": "", "signature_valid": False, "linked": False, "extensions": [],
                "attributes": []}
    try:
        signature = csr.signature_algorithm_oid._name
    except AttributeError:
        signature = csr.signature_algorithm_oid.dotted_string
    try:
        sans = [_general_name(g) for g in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except (x509.ExtensionNotFound, ValueError):
        sans = []
    try:
        extensions = [{"name": _ext_name(e), "oid": e.oid.dotted_string, "critical": e.critical,
                       "value": _ext_value(e)[:MAX_VALUE]} for e in csr.extensions]
    except ValueError:
        extensions = []
    try:
        attributes = [_attribute_name(a.oid) for a in csr.attributes]
    except ValueError:
        attributes = []
    from kipuka.ra.linking import challenge_password  # the RA's reading of the attribute
    return {"readable": True, "subject": csr.subject.rfc4514_string(), "sans": sans,
            "public_key": key_description(csr.public_key()), "signature_algorithm": signature,
            "signature_valid": csr.is_signature_valid, "linked": challenge_password(csr) is not None,
            "extensions": extensions, "attributes": attributes}
