"""Reading and verifying a CMS SignedData (RFC 5652), which cryptography cannot verify for CMC content.

Verification of one SignerInfo (RFC 5652 §5.4, §5.6):
  * signedAttrs MUST be present (eContentType is not id-data), with exactly one
    content-type attribute equal to eContentType and exactly one
    message-digest attribute equal to digestAlgorithm(eContent);
  * the signature is checked over the DER of the signed attributes as received,
    with the IMPLICIT [0] tag replaced by SET OF (0x31);
  * the algorithms are those of kipuka.cmc.cms.algorithms.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ, useful

from kipuka.cmc import asn1, der, oids
from kipuka.cmc.cms.algorithms import PUBLIC_KEY_CLASSES, PublicKey, bad_alg, digest_class, verify_signature
from kipuka.cmc.cms.identifiers import SignerId
from kipuka.cmc.errors import CMCFailInfo, CmcError


def _check(message: str, ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badMessageCheck, ids, message)


def _params(alg) -> bytes | None:
    p = alg["parameters"]
    if not p.isValue:
        return None
    raw = p.asOctets()
    return None if raw == der.null() else raw


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
            raise bad_alg("unsupported public key in the signer certificate", ids) from exc
    else:
        found = key_lookup(si.sid) if key_lookup is not None else None
        if found is None:
            raise CmcError(CMCFailInfo.badCertId, ids,
                           f"no certificate in the SignedData matches the signer identifier ({si.sid.kind})")
        key, request_id = found
    if not isinstance(key, PUBLIC_KEY_CLASSES):
        raise bad_alg("unsupported signer key type", ids)
    if not verify_signature(key, si.signature_algorithm, si.signature_params, si.signature, si.signed_attrs,
                            default_hash=hash_cls, ids=ids):
        raise _check("the signature does not verify", ids)
    return VerifiedSigner(sid=si.sid, public_key=key, certificate=cert, request_body_part_id=request_id,
                          digest_algorithm=si.digest_algorithm, signature_algorithm=si.signature_algorithm,
                          signing_time=signing_time, signed_attributes=tuple(attrs))
