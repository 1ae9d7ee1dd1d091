"""Building Full PKI Responses (RFC 5272 §3.3.2) and their controls.

A response is a SignedData over a PKIResponse (eContentType
id-cct-PKIResponse) with signed attributes content-type, message-digest and
signing-time; the issued certificates travel in the SignedData certificate set
(RFC 5272 §3.3.2) with the signer's certificate and chain.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence

from cryptography import x509

from kipuka.cmc import cms, der, oids
from kipuka.cmc.errors import CMCFailInfo, CmcError, CMCStatus
from kipuka.cmc.model import BodyPartRef, Control, ControlReader, OtherMsg, StatusInfoV2


class BodyPartIds:
    """Allocates bodyPartIDs unique within one PKIData / PKIResponse (RFC 5272 §3.2.2).

    0 is never handed out: it designates the enclosing PKIData itself.
    """

    def __init__(self, start: int = 1, used: Iterable[int] = ()) -> None:
        self._next = max(1, start)
        self._used: set[int] = set(used)

    def next(self) -> int:
        while self._next in self._used:
            self._next += 1
        if self._next > 4294967295:
            raise ValueError("bodyPartIDs exhausted")
        self._used.add(self._next)
        return self._next

    def claim(self, n: int) -> int:
        if not 0 < n <= 4294967295:
            raise ValueError("a bodyPartID is 1..4294967295 (0 designates the PKIData itself)")
        if n in self._used:
            raise ValueError(f"bodyPartID {n} is already used")
        self._used.add(n)
        return n

    def take(self, n: int | None) -> int:
        return self.next() if n is None else self.claim(n)


def status_info_v2(body_part_id: int, status: CMCStatus, body_list: Sequence[BodyPartRef], *,
                   status_string: str | None = None, fail_info: CMCFailInfo | None = None,
                   pend_token: bytes | None = None, pend_time: dt.datetime | None = None,
                   extended_fail_info: tuple[str, bytes] | None = None) -> Control:
    """An id-cmc-statusInfoV2 control (RFC 5272 §6.1.1).

    `body_list` names what the status is about: bodyPartIDs of requests or
    controls, a tuple for a bodyPartPath into nested PKIData, or 0 for the whole
    request. otherInfo is `fail_info` (status failed), `pend_token` +
    `pend_time` (status pending) or `extended_fail_info`.
    """
    info = StatusInfoV2(CMCStatus(status), tuple(body_list), status_string, fail_info, pend_token, pend_time,
                        extended_fail_info)
    return info.to_control(body_part_id)


def transaction_id_control(body_part_id: int, transaction_id: int) -> Control:
    return Control(body_part_id, oids.ID_CMC_TRANSACTION_ID, (der.integer(transaction_id),))


def sender_nonce_control(body_part_id: int, nonce: bytes) -> Control:
    return Control(body_part_id, oids.ID_CMC_SENDER_NONCE, (der.octets(nonce),))


def recipient_nonce_control(body_part_id: int, nonce: bytes) -> Control:
    return Control(body_part_id, oids.ID_CMC_RECIPIENT_NONCE, (der.octets(nonce),))


def data_return_control(body_part_id: int, data: bytes) -> Control:
    return Control(body_part_id, oids.ID_CMC_DATA_RETURN, (der.octets(data),))


def batch_responses_control(body_part_id: int, body_parts: Sequence[int]) -> Control:
    if not body_parts:
        raise ValueError("batchResponses lists at least one body part")
    return Control(body_part_id, oids.ID_CMC_BATCH_RESPONSES, (der.seq(*(der.integer(b) for b in body_parts)),))


def echo_controls(request: ControlReader | None, ids: BodyPartIds, *, sender_nonce: bytes | None = None
                  ) -> list[Control]:
    """The controls a response echoes (RFC 5272 §6.6, §6.4).

    transactionId is copied; the request's senderNonce is returned as
    recipientNonce; a fresh senderNonce (16 random bytes unless given) is added;
    dataReturn is copied back. A request whose controls cannot be read yields
    only the fresh senderNonce.
    """
    out: list[Control] = []
    if request is not None:
        for read, make in ((request.transaction_id, transaction_id_control),
                           (request.sender_nonce, recipient_nonce_control),
                           (request.data_return, data_return_control)):
            try:
                value = read()
            except CmcError:
                value = None
            if value is not None:
                out.append(make(ids.next(), value))  # type: ignore[operator]
    out.append(sender_nonce_control(ids.next(), sender_nonce if sender_nonce is not None else os.urandom(16)))
    return out


def encode_pki_response(controls: Sequence[Control], cms_sequence: Sequence[tuple[int, bytes]] = (),
                        other_msgs: Sequence[OtherMsg] = ()) -> bytes:
    """PKIResponse DER (RFC 5272 §3.3.2); cmsSequence items are (bodyPartID, ContentInfo DER)."""
    seen: set[int] = set()
    for b in [c.body_part_id for c in controls] + [b for b, _ in cms_sequence] + [o.body_part_id for o in other_msgs]:
        if b in seen:
            raise ValueError(f"bodyPartID {b} is used twice")
        seen.add(b)
    return der.seq(
        der.seq(*(c.encode() for c in controls)),
        der.seq(*(der.seq(der.integer(b), ci) for b, ci in cms_sequence)),
        der.seq(*(der.seq(der.integer(o.body_part_id), der.oid(o.msg_type), o.value) for o in other_msgs)),
    )


def build_pki_response(controls: Sequence[Control], cms_sequence: Sequence[tuple[int, bytes]] = (),
                       certificates: Iterable[x509.Certificate] = (), signer_key: cms.PrivateKey | None = None,
                       signer_cert: x509.Certificate | None = None, chain: Sequence[x509.Certificate] = (), *,
                       other_msgs: Sequence[OtherMsg] = (), sid: str = "issuerAndSerialNumber",
                       hash=None, rsa_pss: bool = False, signing_time: dt.datetime | None = None,
                       signer: cms.CmsSigner | None = None) -> bytes:
    """A Full PKI Response: DER ContentInfo(SignedData(PKIResponse)).

    Signed by `signer_key` with `signer_cert` (or a ready `signer`); the
    SignedData certificate set holds the issued `certificates`, the signer
    certificate and `chain`.
    """
    if signer is None:
        if signer_key is None or signer_cert is None:
            raise ValueError("a response needs signer_key and signer_cert (or signer)")
        signer = cms.CmsSigner(signer_key, signer_cert, sid=sid, hash=hash, rsa_pss=rsa_pss, chain=tuple(chain))
    content = encode_pki_response(controls, cms_sequence, other_msgs)
    return cms.signed_data(oids.ID_CCT_PKI_RESPONSE, content, [signer], certificates=certificates,
                           signing_time=signing_time)


def build_failure_response(error: CmcError, signer: cms.CmsSigner, *, request: ControlReader | None = None,
                           sender_nonce: bytes | None = None) -> bytes:
    """A signed response refusing a request: statusInfoV2 failed with the error's failInfo.

    bodyList is the error's body parts, or 0 (the whole PKIData) when it names
    none. Pass the parsed `request` when there is one so transactionId and the
    nonces are echoed.
    """
    ids = BodyPartIds()
    controls = [status_info_v2(ids.next(), CMCStatus.failed, list(error.body_part_ids) or [0],
                               status_string=error.reason, fail_info=error.fail_info)]
    controls += echo_controls(request, ids, sender_nonce=sender_nonce)
    return build_pki_response(controls, signer=signer)
