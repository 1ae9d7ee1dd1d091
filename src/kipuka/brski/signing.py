"""CMS-signed vouchers and voucher requests: application/voucher-cms+json (RFC 8366 §5.4).

A SignedData whose eContentType is id-ct-animaJSONVoucher and whose eContent is
the JSON. Built and checked by kipuka.keydelivery.signed (pyasn1-modules rfc5652
with cryptography's primitives), the SignedData code kipuka already uses for
server-generated keys: one signer, signed attributes required, the signer
certificate and its chain in `certificates`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from pyasn1_modules import rfc5652

from kipuka.brski.voucher import VoucherError
from kipuka.keydelivery._der import KeyDeliveryError, decode
from kipuka.keydelivery.cms import read_content_info
from kipuka.keydelivery.oids import ID_SIGNED_DATA
from kipuka.keydelivery.signed import SignerKey, signed_data, verify_signed_data

ID_CT_ANIMA_JSON_VOUCHER = "1.2.840.113549.1.9.16.1.40"  # RFC 8366 §8.3
MEDIA_TYPE = "application/voucher-cms+json"
MAX_CMS = 64 * 1024


@dataclass(frozen=True)
class SignedVoucher:
    """A verified voucher-cms+json: the JSON, who signed it, and the certificates it carried."""

    json: bytes
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]


def sign(json_bytes: bytes, key: SignerKey, cert: x509.Certificate, chain: Iterable[x509.Certificate] = ()) -> bytes:
    """DER ContentInfo(SignedData(id-ct-animaJSONVoucher)); the certificate and chain go in `certificates`."""
    return signed_data(json_bytes, ID_CT_ANIMA_JSON_VOUCHER, key, cert, chain)


def verify(der: bytes, *, signer: x509.Certificate | None = None, what: str = "voucher request") -> SignedVoucher:
    """Check the signature and content type; the caller decides whether the signer is trusted.

    With `signer`, the SignerInfo must name that certificate (the pledge's IDevID,
    which the TLS session already proved), whether or not the CMS carries it.
    """
    if len(der) > MAX_CMS:
        raise VoucherError(f"the {what} is larger than {MAX_CMS} bytes")
    try:
        content = verify_signed_data(der, signer=signer)
    except KeyDeliveryError as exc:
        raise VoucherError(f"the {what} is not a valid CMS SignedData: {exc}") from None
    except ValueError as exc:  # a certificate inside that does not parse
        raise VoucherError(f"the {what} carries an unreadable certificate: {str(exc)[:100]}") from None
    if content.content_type != ID_CT_ANIMA_JSON_VOUCHER:
        raise VoucherError(f"the {what} content type is {content.content_type}, "
                           f"not id-ct-animaJSONVoucher ({ID_CT_ANIMA_JSON_VOUCHER})")
    return SignedVoucher(content.content, content.signer, content.certificates)


def unverified_json(der: bytes, what: str = "voucher") -> bytes:
    """The JSON inside a voucher-cms+json whose signer cannot be checked here (no certificate inside).

    Used only to compare a MASA's voucher with the request it answers; the pledge,
    which holds the MASA's trust anchor, verifies the signature (RFC 8995 §5.6.1).
    """
    if len(der) > MAX_CMS:
        raise VoucherError(f"the {what} is larger than {MAX_CMS} bytes")
    try:
        ctype, sd_der = read_content_info(der)
        if ctype != ID_SIGNED_DATA:
            raise KeyDeliveryError(f"content type {ctype} is not SignedData")
        sd = decode(sd_der, rfc5652.SignedData(), "SignedData")
    except KeyDeliveryError as exc:
        raise VoucherError(f"the {what} is not a CMS SignedData: {exc}") from None
    encap = sd["encapContentInfo"]
    if str(encap["eContentType"]) != ID_CT_ANIMA_JSON_VOUCHER or not encap["eContent"].isValue:
        raise VoucherError(f"the {what} does not carry id-ct-animaJSONVoucher content")
    return bytes(encap["eContent"])
