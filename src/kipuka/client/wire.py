"""Reading what EST servers send, tolerantly (RFC 7030 with RFC 8951).

Servers in the field differ in details that RFC 8951 tells receivers to
ignore, and this module accepts all of them:

- base64 wrapped at 64 columns with LF (kipuka, libest), at 76 with CRLF
  (globalsign/est), or on one long line; with or without a trailing newline,
  stray NULs, missing padding;
- `Content-Transfer-Encoding: base64` present or not (it is ignored); raw DER
  when the body is evidently binary; PEM armour (`-----BEGIN PKCS7-----`, or
  plain certificates) as some proxies re-encode;
- `application/pkcs7-mime` with or without `smime-type=certs-only`, parameter
  case, spacing and quoting variations; `application/x-pkcs7-certificates`;
- multipart/mixed for /serverkeygen in either part order, with CRLF or LF line
  ends and extra blank lines after the closing boundary.

Nothing here does I/O; `kipuka.client.client` feeds it bodies and headers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import json
import re
import warnings
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc7030

from kipuka import pq
from kipuka.client import template as csr_template
from kipuka.client.errors import InvalidResponse

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
PKCS7_MIME = "application/pkcs7-mime"
PKCS10 = "application/pkcs10"
CSRATTRS = "application/csrattrs"
PKCS8 = "application/pkcs8"
MULTIPART_MIXED = "multipart/mixed"
CMC_REQUEST = "application/pkcs7-mime; smime-type=CMC-request"

_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_IGNORED = re.compile(rb"[\r\n\t \x00\x0b\x0c]+")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
MAX_REASON = 300


# --- media types -----------------------------------------------------------------------

@dataclass(frozen=True)
class MediaType:
    type: str                      # "application/pkcs7-mime", lower case
    params: dict[str, str] = field(default_factory=dict)  # keys lower case, values unquoted

    @property
    def smime_type(self) -> str:
        return self.params.get("smime-type", "").lower()

    def __str__(self) -> str:
        return "; ".join([self.type, *(f"{k}={v}" for k, v in self.params.items())])


def parse_media_type(value: str | None) -> MediaType:
    if not value:
        return MediaType("")
    head, *rest = _split_params(value)
    params: dict[str, str] = {}
    for item in rest:
        key, sep, val = item.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"')
        params[key.strip().lower()] = val
    return MediaType(head.strip().lower(), params)


def _split_params(value: str) -> list[str]:
    """Split on ';' outside double quotes (a boundary may contain ';' when quoted)."""
    out, cur, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def is_certs_media(mt: MediaType) -> bool:
    if mt.type in ("application/x-pkcs7-certificates", "application/pkcs7-certificates"):
        return True
    return mt.type in (PKCS7_MIME, "application/x-pkcs7-mime") and mt.smime_type in ("", "certs-only")


# --- bodies ----------------------------------------------------------------------------

def decode_body(body: bytes, what: str, transfer_encoding: str | None = None) -> bytes:
    """DER from a response body or part: base64 (any wrapping), PEM armour or raw DER.

    `transfer_encoding` is looked at only to recognise an explicit "binary";
    RFC 8951 says a base64 body is base64 whatever the header says.
    """
    data = body.strip(b"\r\n\t \x00")
    if not data:
        raise InvalidResponse(f"{what}: empty body")
    if data.startswith(b"-----BEGIN"):
        m = _PEM_BLOCK.search(data)
        if not m:
            raise InvalidResponse(f"{what}: unterminated PEM block")
        data = m.group(2)
        # RFC 7468 allows explanatory headers ("Proc-Type: ...") before the base64.
        if b":" in data:
            data = data.split(b"\n\n" if b"\n\n" in data else b"\r\n\r\n", 1)[-1]
    elif (transfer_encoding or "").strip().lower() == "binary" or not _looks_base64(data):
        if data[:1] == b"\x30":
            return body  # raw DER
        raise InvalidResponse(f"{what}: body is neither base64 nor DER")
    text = _IGNORED.sub(b"", data)
    if b"-" in text or b"_" in text:
        text = text.replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidResponse(f"{what}: body is not valid base64") from None
    if not der:
        raise InvalidResponse(f"{what}: body decodes to nothing")
    return der


def _looks_base64(data: bytes) -> bool:
    sample = _IGNORED.sub(b"", data[:4096])
    return bool(sample) and all(c in _B64_CHARS for c in sample)


def certificates(body: bytes, what: str, transfer_encoding: str | None = None) -> list[x509.Certificate]:
    """Certificates of a certs-only PKCS#7 (base64, PEM or DER); PEM certificates accepted too."""
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
        try:
            return x509.load_pem_x509_certificates(stripped)
        except ValueError as exc:
            raise InvalidResponse(f"{what}: PEM certificates do not parse: {_first_line(exc)}") from None
    der = decode_body(body, what, transfer_encoding)
    try:
        with warnings.catch_warnings():
            # Certificate SETs not in DER order are common (cryptography's own serializer
            # makes them when given an ordered chain); BER is what RFC 5652 allows.
            warnings.simplefilter("ignore", UserWarning)
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        certs = _ber_certificates(der)  # should cryptography ever turn that warning into an error
        if certs is None:
            raise InvalidResponse(f"{what}: not a certs-only PKCS#7: {_first_line(exc)}") from None
    if not certs:
        raise InvalidResponse(f"{what}: PKCS#7 holds no certificate")
    return certs


def _ber_certificates(der: bytes) -> list[x509.Certificate] | None:
    """Certificates of a BER SignedData read with pyasn1, or None when it is not one."""
    from pyasn1.codec.ber import decoder as ber_decoder
    from pyasn1.codec.der import encoder as der_encoder
    from pyasn1_modules import rfc5652
    try:
        ci, _ = ber_decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
        if str(ci["contentType"]) != "1.2.840.113549.1.7.2":
            return None
        sd, _ = ber_decoder.decode(bytes(ci["content"]), asn1Spec=rfc5652.SignedData())
        if not sd["certificates"].isValue:
            return []
        return [x509.load_der_x509_certificate(der_encoder.encode(choice["certificate"]))
                for choice in sd["certificates"] if choice.getName() == "certificate"]
    except (PyAsn1Error, ValueError):
        return None


# --- /csrattrs -------------------------------------------------------------------------

@dataclass(frozen=True)
class CsrAttributes:
    """A decoded CsrAttrs (RFC 7030 4.5.2, RFC 9908).

    `oids` are the bare OIDs (signature algorithms, key types, challengePassword);
    `attributes` maps an attribute OID to its values: dotted OIDs where a value is
    an OBJECT IDENTIFIER (curves, extension types), else the DER of the value.
    `template` is the RFC 9908 CertificationRequestInfoTemplate when the server sent
    one; RFC 9908 §4 has a client that reads it follow it alone, so `key_type()` does.
    """

    der: bytes = b""
    oids: tuple[str, ...] = ()
    attributes: dict[str, tuple[str | bytes, ...]] = field(default_factory=dict)
    template: csr_template.CsrTemplate | None = None

    def key_types(self) -> list[str]:
        """Key types the server names, as kipuka key-type names, in the order it lists them."""
        if self.template is not None and self.template.key_type:
            kind = self.template.key_type
            return ["rsa" if kind.startswith("rsa") else kind]
        out: list[str] = []
        for curve in self.attributes.get(ID_EC_PUBLIC_KEY, ()):
            if isinstance(curve, str) and curve in CURVE_NAMES:
                out.append(CURVE_NAMES[curve])
        if ID_EC_PUBLIC_KEY in self.oids and not out:
            out.append("ec-p256")
        if RSA_ENCRYPTION in self.oids or RSA_ENCRYPTION in self.attributes:
            out.append("rsa")
        if ED25519 in self.oids:
            out.append("ed25519")
        out.extend(pq.TYPE_BY_OID[o] for o in self.oids if o in pq.TYPE_BY_OID)  # RFC 9881 id-ml-dsa-NN
        return out

    def key_type(self, preferred: str = "ec-p256") -> str:
        """`preferred` when the server accepts it or says nothing, else the first key type it names."""
        if self.template is not None and self.template.key_type:
            return self.template.key_type  # RFC 9908 §4: the template alone
        named = self.key_types()
        if not named or preferred in named or (preferred.startswith("rsa") and "rsa" in named):
            return preferred
        return self._rsa_size() if named[0] == "rsa" else named[0]

    def _rsa_size(self) -> str:
        """rsaEncryption with an INTEGER modulus length (RFC 9908 §3.2, example 5.4), else rsa2048."""
        for value in self.attributes.get(RSA_ENCRYPTION, ()):
            if isinstance(value, bytes):
                try:
                    bits, rest = der_decoder.decode(value, asn1Spec=univ.Integer())
                except PyAsn1Error:
                    continue
                if not rest and 2048 <= int(bits) <= 16384:
                    return f"rsa{int(bits)}"
        return "rsa2048"

    def signature_hash(self) -> str | None:
        for oid in self.oids:
            if oid in SIGNATURE_HASHES:
                return SIGNATURE_HASHES[oid]
        return None

    @property
    def wants_challenge_password(self) -> bool:
        return CHALLENGE_PASSWORD in self.oids or CHALLENGE_PASSWORD in self.attributes

    @property
    def extension_requests(self) -> tuple[str, ...]:
        """X.509 extensions asked for: bare extension OIDs (id-ce arc, as kipuka and RFC 9908 send
        them) and OIDs inside an extensionRequest attribute (the RFC 7030 example's form)."""
        bare = tuple(oid for oid in self.oids if oid.startswith("2.5.29."))
        return bare + tuple(v for v in self.attributes.get(EXTENSION_REQUEST, ()) if isinstance(v, str))

    def to_json(self) -> dict:
        return {"oids": list(self.oids),
                "attributes": {k: [v if isinstance(v, str) else v.hex() for v in vs]
                               for k, vs in self.attributes.items()},
                "template": self.template.to_json() if self.template is not None else None}


ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ED25519 = "1.3.101.112"
CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
CURVE_NAMES = {"1.2.840.10045.3.1.7": "ec-p256", "1.3.132.0.34": "ec-p384", "1.3.132.0.35": "ec-p521"}
SIGNATURE_HASHES = {"1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384",
                    "1.2.840.10045.4.3.4": "sha512", "1.2.840.113549.1.1.11": "sha256",
                    "1.2.840.113549.1.1.12": "sha384", "1.2.840.113549.1.1.13": "sha512"}


def csr_attributes(der: bytes) -> CsrAttributes:
    try:
        decoded, rest = der_decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    except PyAsn1Error as exc:
        raise InvalidResponse(f"csrattrs: not a CsrAttrs structure: {_first_line(exc)}") from None
    if rest:
        raise InvalidResponse("csrattrs: trailing bytes after the CsrAttrs structure")
    oids: list[str] = []
    attrs: dict[str, tuple[str | bytes, ...]] = {}
    for item in decoded:
        name = item.getName()
        if name == "oid":
            oids.append(str(item["oid"]))
        elif name == "attribute":
            attr = item["attribute"]
            values: list[str | bytes] = []
            for raw in attr["attrValues"]:
                blob = bytes(raw)  # AttributeValue is an ANY: the value's own DER
                try:
                    oid, tail = der_decoder.decode(blob, asn1Spec=univ.ObjectIdentifier())
                    values.append(str(oid) if not tail else blob)
                except PyAsn1Error:
                    values.append(blob)
            attrs[str(attr["attrType"])] = tuple(values)
    blobs = attrs.get(csr_template.asn1.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE, ())
    template = csr_template.read(blobs[0]) if blobs and isinstance(blobs[0], bytes) else None
    return CsrAttributes(der, tuple(oids), attrs, template)


# --- multipart (/serverkeygen) ---------------------------------------------------------

@dataclass(frozen=True)
class Part:
    headers: dict[str, str]   # lower-case names
    body: bytes

    @property
    def media(self) -> MediaType:
        return parse_media_type(self.headers.get("content-type"))

    @property
    def transfer_encoding(self) -> str | None:
        return self.headers.get("content-transfer-encoding")


def multipart(body: bytes, media: MediaType) -> list[Part]:
    """The parts of a multipart body (RFC 2046 5.1), tolerant of LF-only line ends."""
    boundary = media.params.get("boundary")
    if not boundary:
        raise InvalidResponse("multipart response without a boundary parameter")
    delim = b"--" + boundary.encode("ascii", "replace")
    parts: list[Part] = []
    current: list[bytes] | None = None
    for line in body.splitlines(keepends=True):
        bare = line.rstrip(b"\r\n").rstrip(b" \t")
        if bare == delim or bare == delim + b"--":
            if current is not None:
                parts.append(_part(current))
            if bare.endswith(b"--") and bare != delim:
                current = None
                break
            current = []
            continue
        if current is not None:
            current.append(line)
    if current is not None:  # no closing delimiter: take what came (lenient)
        parts.append(_part(current))
    if not parts:
        raise InvalidResponse(f"multipart response has no part delimited by {delim.decode(errors='replace')!r}")
    return parts


def _part(lines: list[bytes]) -> Part:
    headers: dict[str, str] = {}
    i = 0
    last = None
    while i < len(lines):
        line = lines[i]
        i += 1
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and last:
            headers[last] += " " + text.strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:  # a part without headers: this line is already body
            i -= 1
            break
        last = name.strip().lower()
        headers[last] = value.strip()
    body = b"".join(lines[i:])
    # The line break before the next delimiter belongs to the delimiter.
    if body.endswith(b"\r\n"):
        body = body[:-2]
    elif body.endswith(b"\n"):
        body = body[:-1]
    return Part(headers, body)


# --- headers and error bodies ----------------------------------------------------------

def retry_after(value: str | None, now: dt.datetime | None = None) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() is true for "²", which int() refuses
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0, int((when - now).total_seconds() + 0.999))


def error_reason(body: bytes, content_type: str | None, fallback: str) -> str:
    """The server's one-line reason from an error body (text, problem+json, or HTML)."""
    mt = parse_media_type(content_type)
    text = body[:8192].decode("utf-8", "replace").strip()
    if not text:
        return fallback
    if mt.type.endswith("json"):
        try:
            doc = json.loads(text)
            if isinstance(doc, dict):
                for key in ("detail", "message", "error_description", "error", "title"):
                    if isinstance(doc.get(key), str) and doc[key].strip():
                        text = doc[key]
                        break
        except ValueError:
            pass
    elif mt.type == "text/html" or text.lstrip().startswith("<"):
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
        text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = " ".join(lines[0].split()) if lines else fallback
    return line[:MAX_REASON]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
