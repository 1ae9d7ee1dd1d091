"""What the client shows people: CSR attributes by name, certificates as JSON, times and durations.

A /csrattrs answer is a list of OIDs and DER values; printed raw, it tells a
device owner nothing. Here each known OID gets its name (key types with their
curves and sizes, signature algorithms, extensions, channel binding), and
only what is unknown is shown as an OID (and hex).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ

from kipuka.client import wire
from kipuka.client.verify import fingerprint

SIGNATURES = {
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256", "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512", "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption", "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.10": "RSASSA-PSS", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448",
}
CURVES = {"1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521"}
EXTENSIONS = {
    "2.5.29.14": "subjectKeyIdentifier", "2.5.29.15": "keyUsage", "2.5.29.17": "subjectAltName",
    "2.5.29.19": "basicConstraints", "2.5.29.37": "extKeyUsage", "2.5.29.32": "certificatePolicies",
    "1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
}
ATTRIBUTES = {
    wire.CHALLENGE_PASSWORD: "challengePassword", wire.EXTENSION_REQUEST: "extensionRequest",
    "1.2.840.113549.1.9.1": "emailAddress", "1.2.840.113549.1.9.20": "friendlyName",
    "1.2.840.113549.1.9.2": "unstructuredName", "1.2.840.113549.1.9.8": "unstructuredAddress",
    "1.2.840.113549.1.9.16.2.54": "asymmetricDecryptKeyIdentifier",
    "1.2.840.113549.1.9.16.2.37": "decryptKeyIdentifier", "2.5.4.5": "serialNumber",
}
NAMED_ELSEWHERE = {wire.ID_EC_PUBLIC_KEY, wire.RSA_ENCRYPTION, wire.ED25519, wire.CHALLENGE_PASSWORD,
                   wire.EXTENSION_REQUEST}
TEMPLATE = wire.csr_template.asn1.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE  # RFC 9908, shown by its own lines


def csrattrs_lines(attrs: wire.CsrAttributes) -> list[str]:
    """One line per thing the server asks for, by name."""
    if not attrs.der:
        return ["(no CSR attributes requested)"]
    lines = []
    keys = key_type_names(attrs)
    if keys:
        lines.append(f"key types: {', '.join(keys)}")
    sigs = [SIGNATURES[o] for o in attrs.oids if o in SIGNATURES and o != wire.ED25519]
    if sigs:
        lines.append(f"signature algorithms: {', '.join(sigs)}")
    exts = [EXTENSIONS.get(o, o) for o in attrs.extension_requests]
    if exts:
        lines.append(f"extensions to include: {', '.join(dict.fromkeys(exts))}")
    if attrs.wants_challenge_password:
        lines.append("channel binding: the CSR must carry the TLS channel binding in challengePassword "
                     "(kipuka-est does it by itself)")
    for oid in attrs.oids:
        if oid not in SIGNATURES and oid not in NAMED_ELSEWHERE and not oid.startswith("2.5.29."):
            lines.append(f"attribute {ATTRIBUTES.get(oid, oid)}")
    for oid, values in attrs.attributes.items():
        if oid in NAMED_ELSEWHERE or oid == TEMPLATE:
            continue
        shown = ", ".join(v if isinstance(v, str) else v.hex() for v in values)
        lines.append(f"attribute {ATTRIBUTES.get(oid, oid)} = {shown}")
    if attrs.template is not None:
        lines += attrs.template.describe()
    return lines


def key_type_names(attrs: wire.CsrAttributes) -> list[str]:
    """"EC P-256", "RSA (at least 3072 bits)", "Ed25519": the key types the server names, in its order."""
    if attrs.template is not None and attrs.template.key_type:
        return [_kipuka_key_name(attrs.template.key_type)]
    out = []
    curves = [c for c in attrs.attributes.get(wire.ID_EC_PUBLIC_KEY, ()) if isinstance(c, str)]
    if curves:
        out += [f"EC {CURVES.get(c, c)}" for c in curves]
    elif wire.ID_EC_PUBLIC_KEY in attrs.oids:
        out.append("EC (any curve)")
    if wire.RSA_ENCRYPTION in attrs.oids or wire.RSA_ENCRYPTION in attrs.attributes:
        bits = _rsa_bits(attrs.attributes.get(wire.RSA_ENCRYPTION, ()))
        out.append(f"RSA (at least {bits} bits)" if bits else "RSA")
    if wire.ED25519 in attrs.oids:
        out.append("Ed25519")
    return out


def _rsa_bits(values: tuple) -> int | None:
    for value in values:
        if isinstance(value, bytes):
            try:
                bits, rest = der_decoder.decode(value, asn1Spec=univ.Integer())
            except PyAsn1Error:
                continue
            if not rest:
                return int(bits)
    return None


def _kipuka_key_name(kind: str) -> str:
    if kind.startswith("ec-p"):
        return f"EC P-{kind[4:]}"
    if kind.startswith("rsa"):
        return f"RSA ({kind[3:]} bits)" if kind[3:] else "RSA"
    return "Ed25519" if kind == "ed25519" else kind


# --- certificates, times --------------------------------------------------------------------

def certificate_doc(c: x509.Certificate) -> dict:
    return {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"), "not_before": iso(c.not_valid_before_utc),
            "not_after": iso(c.not_valid_after_utc), "sha256": fingerprint(c)}


def pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def iso(t: dt.datetime) -> str:
    """UTC, to the second: how every time the client writes (state, status, JSON) looks."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def human(seconds: float) -> str:
    s = abs(int(seconds))
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 120:
        return f"{s / 60:.0f} min"
    return f"{s} s"
