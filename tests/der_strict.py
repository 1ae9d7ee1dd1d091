"""A strict DER check for the bytes kipuka sends: decode with pyasn1's DER decoder, re-encode, compare.

pyasn1's DER decoder on its own is not strict: it accepts a SET OF in any order and
long-form lengths that DER forbids (tests/unit/test_der_strict.py shows both). Its DER
encoder sorts every SET OF (X.690 §11.6) and writes minimal lengths, so a value that
re-encodes to the very bytes it was decoded from is DER, down to every field the
specification types (fields typed ANY are compared as they are, and checked with their
own specification where the caller gives one).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc5652, rfc5958, rfc6402

ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_DATA = "1.2.840.113549.1.7.1"
ID_CCT_PKI_RESPONSE = "1.3.6.1.5.5.7.12.3"
ID_CT_KP_AKEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"
# What an encapsulated content is, so that its own SET OFs are checked too.
ECONTENT_SPECS = {ID_CCT_PKI_RESPONSE: rfc6402.PKIResponse, ID_CT_KP_AKEY_PACKAGE: rfc5958.AsymmetricKeyPackage}


class NotDer(AssertionError):
    """The bytes are BER (or worse), not DER."""


def assert_der(data: bytes, spec, what: str):
    """The value of `spec` that `data` holds, after checking that `data` is its DER encoding."""
    try:
        value, rest = der_decoder.decode(bytes(data), asn1Spec=spec)
    except PyAsn1Error as exc:
        raise NotDer(f"{what} does not decode as DER: {str(exc).splitlines()[0][:200]}") from None
    if rest:
        raise NotDer(f"{what}: {len(rest)} bytes after the value")
    again = der_encoder.encode(value)
    if again != bytes(data):
        at = next((i for i, (a, b) in enumerate(zip(again, bytes(data))) if a != b), min(len(again), len(data)))
        raise NotDer(f"{what} is not DER: its DER re-encoding differs from byte {at} on "
                     "(an unsorted SET OF, a long-form length, ...)")
    return value


def assert_der_signed_data(der: bytes, what: str = "SignedData") -> rfc5652.SignedData:
    """A ContentInfo(SignedData) checked as DER, with its encapsulated content when its type is known."""
    ci = assert_der(der, rfc5652.ContentInfo(), f"{what} ContentInfo")
    assert str(ci["contentType"]) == ID_SIGNED_DATA, f"{what}: content type {ci['contentType']} is not SignedData"
    return assert_der_signed_data_content(bytes(ci["content"]), what)


def assert_der_signed_data_content(der: bytes, what: str = "SignedData") -> rfc5652.SignedData:
    """A bare SignedData (what an EnvelopedData of id-signedData holds) checked as DER."""
    sd = assert_der(der, rfc5652.SignedData(), what)
    encap = sd["encapContentInfo"]
    spec = ECONTENT_SPECS.get(str(encap["eContentType"]))
    if spec is not None and encap["eContent"].isValue:
        assert_der(bytes(encap["eContent"]), spec(), f"{what} eContent {encap['eContentType']}")
    return sd


def signed_data_certificates(sd: rfc5652.SignedData) -> list[x509.Certificate]:
    if not sd["certificates"].isValue:
        return []
    return [x509.load_der_x509_certificate(der_encoder.encode(choice["certificate"]))
            for choice in sd["certificates"] if choice.getName() == "certificate"]


def certs_only(der: bytes, what: str = "certs-only") -> list[x509.Certificate]:
    """The certificates of a DER certs-only PKCS#7 (RFC 5652 degenerate SignedData), in their DER order."""
    sd = assert_der_signed_data(der, what)
    assert len(sd["signerInfos"]) == 0, f"{what}: a certs-only message has no signers"
    assert str(sd["encapContentInfo"]["eContentType"]) == ID_DATA
    assert not sd["encapContentInfo"]["eContent"].isValue, f"{what}: a certs-only message has no content"
    return signed_data_certificates(sd)


def chain_ordered_certs_only(certs: list[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 with its certificate set in the given order: BER whenever that is not
    the DER order. What /cacerts sent before issue #15, and what some other servers send; written
    by hand because every library sorts the set. Lengths are written in two bytes, which is the
    minimal form for anything holding a certificate (256 bytes to 64 kB)."""
    def tlv(tag: int, content: bytes) -> bytes:
        return bytes([tag, 0x82]) + len(content).to_bytes(2, "big") + content

    id_data, id_signed_data = bytes.fromhex("06092a864886f70d010701"), bytes.fromhex("06092a864886f70d010702")
    certificates = tlv(0xA0, b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs))
    signed = tlv(0x30, b"\x02\x01\x01" + b"\x31\x00" + b"\x30\x0b" + id_data + certificates + b"\x31\x00")
    return tlv(0x30, id_signed_data + tlv(0xA0, signed))
