"""The test side's own CMS SignedData for vouchers, written apart from kipuka's
(kipuka.keydelivery.signed) so that a bug shared by signer and verifier cannot
hide: pyasn1-modules rfc5652 structures, cryptography's primitives, EC keys."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ, useful
from pyasn1_modules import rfc5280, rfc5652

VOUCHER_CT = "1.2.840.113549.1.9.16.1.40"  # id-ct-animaJSONVoucher (RFC 8366 §8.3)
SIGNED_DATA = "1.2.840.113549.1.7.2"
CONTENT_TYPE, MESSAGE_DIGEST, SIGNING_TIME = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5"
SHA256, ECDSA_SHA256 = "2.16.840.1.101.3.4.2.1", "1.2.840.10045.4.3.2"


class CmsInvalid(Exception):
    pass


def _alg(oid: str) -> rfc5280.AlgorithmIdentifier:
    a = rfc5280.AlgorithmIdentifier()
    a["algorithm"] = univ.ObjectIdentifier(oid)
    return a


def _attr(oid: str, value) -> rfc5652.Attribute:
    a = rfc5652.Attribute()
    a["attrType"] = univ.ObjectIdentifier(oid)
    a["attrValues"].append(univ.Any(encoder.encode(value)))
    return a


def sign(content: bytes, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
         chain: list[x509.Certificate] = (), content_type: str = VOUCHER_CT) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(content)
    si = rfc5652.SignerInfo()
    si["version"] = 1
    ias = rfc5652.IssuerAndSerialNumber()
    ias["issuer"] = decoder.decode(cert.issuer.public_bytes(), asn1Spec=rfc5280.Name())[0]
    ias["serialNumber"] = cert.serial_number
    si["sid"]["issuerAndSerialNumber"] = ias
    si["digestAlgorithm"] = _alg(SHA256)
    si["signedAttrs"].append(_attr(CONTENT_TYPE, univ.ObjectIdentifier(content_type)))
    si["signedAttrs"].append(_attr(MESSAGE_DIGEST, univ.OctetString(digest.finalize())))
    t = rfc5652.Time()
    t["utcTime"] = useful.UTCTime(dt.datetime.now(dt.timezone.utc).strftime("%y%m%d%H%M%SZ"))
    si["signedAttrs"].append(_attr(SIGNING_TIME, t))
    to_sign = b"\x31" + encoder.encode(si["signedAttrs"])[1:]
    si["signatureAlgorithm"] = _alg(ECDSA_SHA256)
    si["signature"] = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    sd = rfc5652.SignedData()
    sd["version"] = 3
    sd["digestAlgorithms"].append(_alg(SHA256))
    sd["encapContentInfo"]["eContentType"] = univ.ObjectIdentifier(content_type)
    sd["encapContentInfo"]["eContent"] = content
    for c in [cert, *chain]:
        choice = rfc5652.CertificateChoices()
        choice["certificate"] = decoder.decode(c.public_bytes(serialization.Encoding.DER),
                                               asn1Spec=rfc5280.Certificate())[0]
        sd["certificates"].append(choice)
    sd["signerInfos"].append(si)
    ci = rfc5652.ContentInfo()
    ci["contentType"] = univ.ObjectIdentifier(SIGNED_DATA)
    ci["content"] = univ.Any(encoder.encode(sd))
    return encoder.encode(ci)


def verify(der: bytes, content_type: str = VOUCHER_CT) -> tuple[bytes, x509.Certificate, list[x509.Certificate]]:
    """(content, signer certificate, all certificates) of a SignedData signed by a certificate it carries.

    RFC 5652 §5.4/§5.6: signed attributes with one content-type equal to eContentType and one
    message-digest of the content; the signature is over the DER SET OF those attributes.
    """
    ci, rest = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    if rest or str(ci["contentType"]) != SIGNED_DATA:
        raise CmsInvalid("not a ContentInfo(SignedData)")
    sd, rest = decoder.decode(bytes(ci["content"]), asn1Spec=rfc5652.SignedData())
    if rest:
        raise CmsInvalid("trailing bytes")
    if str(sd["encapContentInfo"]["eContentType"]) != content_type:
        raise CmsInvalid(f"eContentType {sd['encapContentInfo']['eContentType']} is not {content_type}")
    content = bytes(sd["encapContentInfo"]["eContent"])
    certs = [x509.load_der_x509_certificate(encoder.encode(c["certificate"])) for c in sd["certificates"]]
    if len(sd["signerInfos"]) != 1:
        raise CmsInvalid("expected one SignerInfo")
    si = sd["signerInfos"][0]
    sid = si["sid"]
    if sid.getName() == "issuerAndSerialNumber":
        want = encoder.encode(sid["issuerAndSerialNumber"]["issuer"]), int(sid["issuerAndSerialNumber"]["serialNumber"])
        signer = next((c for c in certs if (c.issuer.public_bytes(), c.serial_number) == want), None)
    else:
        ski = bytes(sid["subjectKeyIdentifier"])
        signer = next((c for c in certs if c.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest == ski), None)
    if signer is None:
        raise CmsInvalid("the signer's certificate is not in the SignedData")
    attrs = {str(a["attrType"]): [bytes(v) for v in a["attrValues"]] for a in si["signedAttrs"]}
    if [decoder.decode(v, asn1Spec=univ.ObjectIdentifier())[0] for v in attrs.get(CONTENT_TYPE, [])] != [
            univ.ObjectIdentifier(content_type)]:
        raise CmsInvalid("content-type attribute missing or wrong")
    digest = hashes.Hash(hashes.SHA256())
    digest.update(content)
    if [bytes(decoder.decode(v, asn1Spec=univ.OctetString())[0]) for v in attrs.get(MESSAGE_DIGEST, [])] != [
            digest.finalize()]:
        raise CmsInvalid("message-digest attribute missing or wrong")
    signed = b"\x31" + encoder.encode(si["signedAttrs"])[1:]
    try:
        signer.public_key().verify(bytes(si["signature"]), signed, ec.ECDSA(hashes.SHA256()))
    except Exception as exc:
        raise CmsInvalid(f"the signature does not verify ({type(exc).__name__})") from None
    return content, signer, certs
