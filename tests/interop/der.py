"""A CMC Full PKI Request built by hand, signed by `openssl cms -sign`.

The interop tests post /fullcmc requests that no part of kipuka helped to build:
the PKIData (RFC 5272 §3.2.1) is a few DER TLVs written here, and openssl signs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ID_CCT_PKI_DATA = "1.3.6.1.5.5.7.12.2"
ID_CMC_TRANSACTION_ID = "1.3.6.1.5.5.7.7.5"
ID_CMC_SENDER_NONCE = "1.3.6.1.5.5.7.7.6"
CMC_REQUEST = "application/pkcs7-mime; smime-type=CMC-request"
CMC_RESPONSE = "application/pkcs7-mime; smime-type=CMC-response"
TCR_BODY_PART = 3


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.insert(0, 0x80 | (arc & 0x7F))
        out += bytes(chunk)
    return tlv(0x06, bytes(out))


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def pki_data(csr_der: bytes, transaction_id: int | None = None, nonce: bytes | None = None) -> bytes:
    """PKIData: transactionId and senderNonce controls (random unless given), one tcr (bodyPartID 3)."""
    seq, set_of = 0x30, 0x31
    txid = int.from_bytes(os.urandom(8), "big") if transaction_id is None else transaction_id
    nonce = os.urandom(16) if nonce is None else nonce
    controls = (tlv(seq, integer(1) + oid(ID_CMC_TRANSACTION_ID) + tlv(set_of, integer(txid)))
                + tlv(seq, integer(2) + oid(ID_CMC_SENDER_NONCE) + tlv(set_of, tlv(0x04, nonce))))
    tcr = tlv(0xA0, integer(TCR_BODY_PART) + csr_der)  # [0] IMPLICIT TaggedCertificationRequest
    return tlv(seq, tlv(seq, controls) + tlv(seq, tcr) + tlv(seq, b"") + tlv(seq, b""))


def openssl_signed(workdir: Path, csr_der: bytes, signer_cert: str, signer_key: str) -> bytes:
    """The PKIData around csr_der as a CMS SignedData (eContentType id-cct-PKIData), DER, by openssl."""
    src = workdir / f"pkidata-{os.urandom(4).hex()}.der"
    src.write_bytes(pki_data(csr_der))
    return subprocess.run(["openssl", "cms", "-sign", "-in", str(src), "-binary", "-nodetach", "-signer", signer_cert,
                           "-inkey", signer_key, "-econtent_type", ID_CCT_PKI_DATA, "-outform", "DER"],
                          capture_output=True, check=True, timeout=30).stdout
