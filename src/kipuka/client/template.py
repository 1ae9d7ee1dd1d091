"""RFC 9908 CSR templates as a client uses them: which names to put where, which key, which extensions.

A server's /csrattrs may carry a CertificationRequestInfoTemplate (the ASN.1 is in
kipuka.est.csr_template). RFC 9908 §4: a client that understands it uses the template
only, so `CsrAttributes.key_type()` follows it, and `kipuka-est enroll` fills in the
subject it describes: values the server fixed are copied, the open ones come from
--cn / --rdn, and a subjectAltName it asks for from --san.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error

from kipuka import pq
from kipuka.client.errors import EstError
from kipuka.est import csr_template as asn1

CURVES = {"1.2.840.10045.3.1.7": "ec-p256", "1.3.132.0.34": "ec-p384", "1.3.132.0.35": "ec-p521"}
SUBJECT_ALT_NAME = "2.5.29.17"
# RFC 4514 names cryptography does not know by itself, for --rdn
RDN_NAMES = {"serialNumber": NameOID.SERIAL_NUMBER, "emailAddress": NameOID.EMAIL_ADDRESS,
             "SN": NameOID.SURNAME, "GN": NameOID.GIVEN_NAME, "title": NameOID.TITLE}


@dataclass(frozen=True)
class CsrTemplate:
    """What the template asks for. `rdns`: (dotted type, fixed value or None = fill in), in order;
    `key_type`: a kipuka-est key type, or None when the template names no key or an unknown one;
    `extensions`: (dotted extnID, critical, DER value or None = fill in)."""

    rdns: tuple[tuple[str, str | None], ...] = ()
    key_type: str | None = None
    extensions: tuple[tuple[str, bool, bytes | None], ...] = ()

    @property
    def wants_san(self) -> bool:
        return any(oid == SUBJECT_ALT_NAME for oid, _, _ in self.extensions)

    def subject(self, fill: list[x509.NameAttribute]) -> x509.Name:
        """The template's subject: fixed values kept, open RDNs taken from `fill` by type; the rest appended."""
        spare = list(fill)
        out = []
        for dotted, fixed in self.rdns:
            oid = x509.ObjectIdentifier(dotted)
            if fixed is not None:
                out.append(x509.NameAttribute(oid, fixed))
                continue
            match = next((a for a in spare if a.oid == oid), None)
            if match is None:
                label = _short(dotted)
                raise EstError(f"the server's CSR template asks for a subject {label}: give --rdn {label}=VALUE"
                               if oid != NameOID.COMMON_NAME else
                               "the server's CSR template asks for a common name: give --cn (or --user)")
            spare.remove(match)
            out.append(match)
        return x509.Name(out + spare)

    def to_json(self) -> dict:
        return {"subject": [{"type": t, "value": v} for t, v in self.rdns], "key_type": self.key_type,
                "extensions": [{"oid": o, "critical": c, "value": v.hex() if v is not None else None}
                               for o, c, v in self.extensions]}

    def describe(self) -> list[str]:
        subject = ", ".join(f"{_short(t)}={v if v is not None else '<fill in>'}" for t, v in self.rdns)
        lines = [f"template subject: {subject or '(no requirement)'}",
                 f"template key: {self.key_type or '(no requirement)'}"]
        lines += [f"template extension {o}{' critical' if c else ''}: {v.hex() if v is not None else '<fill in>'}"
                  for o, c, v in self.extensions]
        return lines


def read(der: bytes) -> CsrTemplate | None:
    """The template in an id-aa-certificationRequestInfoTemplate value; None when it cannot be read."""
    try:
        value = asn1.decode_template(der)
        rdns = tuple((str(rdn[0]["type"]), _text(rdn[0]["value"]) if rdn[0]["value"].isValue else None)
                     for rdn in value["subject"]["rdnSequence"]) if value["subject"].isValue else ()
        key_type = _key_type(value["subjectPKInfo"]) if value["subjectPKInfo"].isValue else None
        extensions: list[tuple[str, bool, bytes | None]] = []
        for attr in value["attributes"]:
            if str(attr["type"]) in (asn1.ID_AA_EXTENSION_REQ_TEMPLATE, asn1.ID_EXTENSION_REQ):
                for ext in asn1.decode_extension_req_template(bytes(attr["values"][0])):
                    extensions.append((str(ext["extnID"]), bool(ext["critical"]),
                                       bytes(ext["extnValue"]) if ext["extnValue"].isValue else None))
    except (asn1.TemplateError, PyAsn1Error, IndexError, KeyError, TypeError, ValueError):
        return None  # RFC 7030 4.5.2: what a client cannot use, it ignores
    return CsrTemplate(rdns, key_type, tuple(extensions))


def parse_rdn(text: str) -> x509.NameAttribute:
    """--rdn "OU=Sensors" (RFC 4514 names, serialNumber, emailAddress, or a dotted OID)."""
    try:
        name = x509.Name.from_rfc4514_string(text, RDN_NAMES)
    except ValueError as exc:
        raise EstError(f"--rdn {text!r}: {exc}") from None
    if len(name) != 1:
        raise EstError(f"--rdn {text!r}: give one TYPE=VALUE per --rdn")
    return next(iter(name))


def _key_type(spki) -> str | None:  # type: ignore[no-untyped-def]
    alg = str(spki["algorithm"]["algorithm"])
    if alg == "1.2.840.10045.2.1" and spki["algorithm"]["parameters"].isValue:
        return CURVES.get(_text(spki["algorithm"]["parameters"]))
    if alg == "1.2.840.113549.1.1.1":
        if not spki["subjectPublicKey"].isValue:
            return "rsa2048"
        modulus = decoder.decode(spki["subjectPublicKey"].asOctets())[0][0]  # RFC 9908: a dummy key gives the size
        return f"rsa{max(2048, int(modulus).bit_length())}"
    if alg == "1.3.101.112":
        return "ed25519"
    return pq.TYPE_BY_OID.get(alg)


def _text(any_value) -> str:  # type: ignore[no-untyped-def]
    return str(decoder.decode(bytes(any_value))[0])


def _short(dotted: str) -> str:
    oid = x509.ObjectIdentifier(dotted)
    short = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
             NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST"}
    name = getattr(oid, "_name", "Unknown OID")
    return short.get(oid) or (dotted if name == "Unknown OID" else name)
