"""Client-side builders: PKIData, CRMF CertReqMsg, and signing a Full PKI Request.

    b = PKIDataBuilder()
    b.add_tcr(csr)                              # PKCS#10, bodyPartID allocated
    b.transaction_id(42); b.sender_nonce()
    b.identification("device-7"); b.identity_proof_v2(b"shared secret")
    der = sign_pki_data(b.build(), CmsSigner(ra_key, ra_cert))

The identity proof witness is computed in `build()` over the exact reqSequence
bytes placed in the PKIData (RFC 5272 §6.2.1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyasn1.type import char

from kipuka.cmc import cms, der, oids
from kipuka.cmc.model import CRL_REASON_CODES, HASH_OID, HMAC_OID, Control, OtherMsg
from kipuka.cmc.response import BodyPartIds


def tcr(body_part_id: int, csr: x509.CertificateSigningRequest | bytes) -> bytes:
    """TaggedRequest tcr [0] TaggedCertificationRequest (IMPLICIT)."""
    csr_der = csr.public_bytes(serialization.Encoding.DER) if isinstance(csr, x509.CertificateSigningRequest) \
        else bytes(csr)
    return der.tlv(0xA0, der.integer(body_part_id) + csr_der)


def crm(cert_req_msg: bytes) -> bytes:
    """TaggedRequest crm [1] CertReqMsg (IMPLICIT: the SEQUENCE tag becomes [1])."""
    return der.retag(cert_req_msg, 0xA1)


def orm(body_part_id: int, message_type: str, value: bytes) -> bytes:
    return der.tlv(0xA2, der.integer(body_part_id) + der.oid(message_type) + value)


def _extension(ext: x509.Extension) -> bytes:
    parts = [der.oid(ext.oid.dotted_string)]
    if ext.critical:
        parts.append(der.boolean(True))
    parts.append(der.octets(ext.value.public_bytes()))
    return der.seq(*parts)


def build_crmf_request(private_key: cms.PrivateKey, *, cert_req_id: int, subject: x509.Name | None,
                       extensions: Sequence[x509.Extension] = (), pop: str | None = "signature",
                       poposk_sender: x509.Name | None = None, hash: hashes.HashAlgorithm | None = None,
                       rsa_pss: bool = False, controls: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A CRMF CertReqMsg (RFC 4211) DER for `private_key`'s public key.

    pop="signature": POPOSigningKey over the DER of CertRequest (RFC 4211 §4.1),
    or, with `poposk_sender`, over a POPOSigningKeyInput naming that sender (the
    template then carries no subject, as §4.1 expects); "raVerified"; or None.
    """
    spki = cms.spki_der(private_key.public_key())
    tmpl: list[bytes] = []
    if subject is not None and poposk_sender is None:
        tmpl.append(der.explicit(5, subject.public_bytes()))          # [5] Name (a CHOICE: explicit)
    tmpl.append(der.implicit(6, spki))                                 # [6] IMPLICIT SubjectPublicKeyInfo
    if extensions:
        tmpl.append(der.implicit(9, der.seq(*(_extension(e) for e in extensions))))  # [9] IMPLICIT Extensions
    req_parts = [der.integer(cert_req_id), der.seq(*tmpl)]
    if controls:
        req_parts.append(der.seq(*(der.seq(der.oid(t), v) for t, v in controls)))
    cert_req = der.seq(*req_parts)
    parts = [cert_req]
    h = hash or cms.default_hash(private_key)
    if pop == "signature":
        alg = cms.signature_algorithm_der(private_key, h, rsa_pss)
        if poposk_sender is not None:
            sender = der.explicit(0, der.explicit(4, poposk_sender.public_bytes()))  # [0] GeneralName directoryName
            inp = der.seq(sender, spki)
            sig = cms.sign_bytes(private_key, h, rsa_pss, inp)
            parts.append(der.tlv(0xA1, der.implicit(0, inp) + alg + der.bit_string(sig)))
        else:
            sig = cms.sign_bytes(private_key, h, rsa_pss, cert_req)
            parts.append(der.tlv(0xA1, alg + der.bit_string(sig)))
    elif pop == "raVerified":
        parts.append(b"\x80\x00")
    elif pop is not None:
        raise ValueError("pop is 'signature', 'raVerified' or None")
    return der.seq(*parts)


def identity_proof_witness(shared_secret: bytes | str, req_sequence_der: bytes, *,
                           identification: str | None = None, hash_name: str = "sha256",
                           mac_hash_name: str = "sha256") -> bytes:
    """RFC 5272 §6.2.1 / §6.2.3: HMAC(H(secret [|| identification]), reqSequence DER)."""
    secret = shared_secret.encode("utf-8") if isinstance(shared_secret, str) else bytes(shared_secret)
    material = secret + (identification.encode("utf-8") if identification is not None else b"")
    key = hashlib.new(hash_name, material).digest()
    return hmac.new(key, req_sequence_der, mac_hash_name).digest()


def build_pki_data(controls: Sequence[Control] = (), requests: Sequence[bytes] = (),
                   cms_sequence: Sequence[tuple[int, bytes]] = (), other_msgs: Sequence[OtherMsg] = ()) -> bytes:
    """PKIData DER from already encoded parts (RFC 5272 §3.2.1).

    `requests` are TaggedRequest encodings (`tcr`, `crm`, `orm`), `cms_sequence`
    (bodyPartID, ContentInfo DER) pairs. See `PKIDataBuilder` for the usual way.
    """
    return der.seq(
        der.seq(*(c.encode() for c in controls)),
        der.seq(*requests),
        der.seq(*(der.seq(der.integer(b), ci) for b, ci in cms_sequence)),
        der.seq(*(der.seq(der.integer(o.body_part_id), der.oid(o.msg_type), o.value) for o in other_msgs)),
    )


def sign_pki_data(pki_data: bytes, signers: cms.CmsSigner | Sequence[cms.CmsSigner], *,
                  certificates: Iterable[x509.Certificate] = (), signing_time: dt.datetime | None = None) -> bytes:
    """A Full PKI Request: DER ContentInfo(SignedData) with eContentType id-cct-PKIData."""
    signer_list = [signers] if isinstance(signers, cms.CmsSigner) else list(signers)
    return cms.signed_data(oids.ID_CCT_PKI_DATA, pki_data, signer_list, certificates=certificates,
                           signing_time=signing_time)


class PKIDataBuilder:
    """Assembles a PKIData with unique bodyPartIDs; every adder returns the ID it used."""

    def __init__(self) -> None:
        self.ids = BodyPartIds()
        self._controls: list[Control] = []
        self._requests: list[bytes] = []
        self._contents: list[tuple[int, bytes]] = []
        self._others: list[OtherMsg] = []
        self._identity: tuple[int, bytes, str, str, int] | None = None  # (bpid, secret, hash, mac, version)
        self.sender_nonce_value: bytes | None = None

    # ------------------------------------------------------------------ requests
    def add_tcr(self, csr: x509.CertificateSigningRequest | bytes, body_part_id: int | None = None) -> int:
        bpid = self.ids.take(body_part_id)
        self._requests.append(tcr(bpid, csr))
        return bpid

    def add_crm(self, cert_req_msg: bytes) -> int:
        """A CertReqMsg (e.g. from `build_crmf_request`); its certReqId is its bodyPartID."""
        from kipuka.cmc.request import _crm
        bpid = self.ids.claim(_crm(cert_req_msg)[0].cert_req_id)
        self._requests.append(crm(cert_req_msg))
        return bpid

    def add_orm(self, message_type: str, value: bytes, body_part_id: int | None = None) -> int:
        bpid = self.ids.take(body_part_id)
        self._requests.append(orm(bpid, message_type, value))
        return bpid

    # ------------------------------------------------------------------ cmsSequence / otherMsgSequence
    def add_content(self, content_info: bytes, body_part_id: int | None = None) -> int:
        """A TaggedContentInfo, e.g. a client's signed Full PKI Request an RA batches."""
        bpid = self.ids.take(body_part_id)
        self._contents.append((bpid, content_info))
        return bpid

    def add_other_msg(self, msg_type: str, value: bytes, body_part_id: int | None = None) -> int:
        bpid = self.ids.take(body_part_id)
        self._others.append(OtherMsg(bpid, msg_type, value))
        return bpid

    # ------------------------------------------------------------------ controls
    def control(self, attr_type: str, values: Sequence[bytes], body_part_id: int | None = None) -> int:
        bpid = self.ids.take(body_part_id)
        self._controls.append(Control(bpid, attr_type, tuple(values)))
        return bpid

    def transaction_id(self, value: int | None = None) -> int:
        """id-cmc-transactionId; a random 63-bit value unless given. Returns the value."""
        value = int.from_bytes(os.urandom(8), "big") >> 1 if value is None else value
        self.control(oids.ID_CMC_TRANSACTION_ID, [der.integer(value)])
        return value

    def sender_nonce(self, nonce: bytes | None = None) -> bytes:
        """id-cmc-senderNonce; 16 random bytes unless given. Returns the nonce."""
        nonce = os.urandom(16) if nonce is None else bytes(nonce)
        self.control(oids.ID_CMC_SENDER_NONCE, [der.octets(nonce)])
        self.sender_nonce_value = nonce
        return nonce

    def recipient_nonce(self, nonce: bytes) -> int:
        return self.control(oids.ID_CMC_RECIPIENT_NONCE, [der.octets(nonce)])

    def identification(self, name: str) -> int:
        return self.control(oids.ID_CMC_IDENTIFICATION, [der.utf8(name)])

    def identity_proof_v2(self, shared_secret: bytes | str, *, hash_name: str = "sha256",
                          mac_hash_name: str = "sha256") -> int:
        """id-cmc-identityProofV2, computed at build() over the reqSequence (RFC 5272 §6.2.1)."""
        if hash_name not in HASH_OID or mac_hash_name not in HMAC_OID:
            raise ValueError("unsupported identity proof hash")
        secret = shared_secret.encode("utf-8") if isinstance(shared_secret, str) else bytes(shared_secret)
        bpid = self.ids.next()
        self._identity = (bpid, secret, hash_name, mac_hash_name, 2)
        return bpid

    def identity_proof(self, shared_secret: bytes | str) -> int:
        """The version 1 id-cmc-identityProof (SHA-1 / HMAC-SHA1, RFC 5272 §6.2.2)."""
        secret = shared_secret.encode("utf-8") if isinstance(shared_secret, str) else bytes(shared_secret)
        bpid = self.ids.next()
        self._identity = (bpid, secret, "sha1", "sha1", 1)
        return bpid

    def revoke_request(self, issuer: x509.Name, serial_number: int,
                       reason: x509.ReasonFlags | int = x509.ReasonFlags.unspecified, *,
                       invalidity_date: dt.datetime | None = None, passphrase: bytes | None = None,
                       comment: str | None = None) -> int:
        """id-cmc-revokeRequest (RFC 5272 §6.11)."""
        code = CRL_REASON_CODES[reason] if isinstance(reason, x509.ReasonFlags) else int(reason)
        parts = [issuer.public_bytes(), der.integer(serial_number), der.tlv(0x0A, der.integer(code)[2:])]
        if invalidity_date is not None:
            parts.append(der.generalized_time(invalidity_date))
        if passphrase is not None:
            parts.append(der.octets(passphrase))
        if comment is not None:
            parts.append(der.utf8(comment))
        return self.control(oids.ID_CMC_REVOKE_REQUEST, [der.seq(*parts)])

    def query_pending(self, pend_token: bytes) -> int:
        """id-cmc-queryPending (RFC 5272 §6.13) with the pendToken of a pending response."""
        return self.control(oids.ID_CMC_QUERY_PENDING, [der.octets(pend_token)])

    def confirm_cert_acceptance(self, issuer: x509.Name, serial_number: int) -> int:
        """id-cmc-confirmCertAcceptance (RFC 5272 §6.14)."""
        return self.control(oids.ID_CMC_CONFIRM_CERT_ACCEPTANCE,
                            [der.seq(issuer.public_bytes(), der.integer(serial_number))])

    def reg_info(self, data: bytes) -> int:
        return self.control(oids.ID_CMC_REG_INFO, [der.octets(data)])

    def data_return(self, data: bytes) -> int:
        return self.control(oids.ID_CMC_DATA_RETURN, [der.octets(data)])

    def batch_requests(self, body_part_ids: Sequence[int]) -> int:
        """id-cmc-batchRequests (RFC 5272 §6.17): BodyPartList of cmsSequence entries."""
        if not body_part_ids:
            raise ValueError("batchRequests lists at least one body part")
        return self.control(oids.ID_CMC_BATCH_REQUESTS, [der.seq(*(der.integer(b) for b in body_part_ids))])

    def change_subject_name(self, subject: x509.Name | None = None,
                            subject_alt: x509.SubjectAlternativeName | None = None) -> int:
        """id-cmc-changeSubjectName (RFC 6402 §2.8)."""
        parts = []
        if subject is not None:
            parts.append(subject.public_bytes())
        if subject_alt is not None:
            parts.append(subject_alt.public_bytes())
        if not parts:
            raise ValueError("changeSubjectName needs a subject or a subjectAlt")
        return self.control(oids.ID_CMC_CHANGE_SUBJECT_NAME, [der.seq(*parts)])

    # ------------------------------------------------------------------ output
    def build(self) -> bytes:
        controls = list(self._controls)
        req_sequence = der.seq(*self._requests)
        if self._identity is not None:
            bpid, secret, hash_name, mac_name, version = self._identity
            ident = next((c for c in controls if c.attr_type == oids.ID_CMC_IDENTIFICATION), None)
            name = None
            if ident is not None:
                name = str(der.decode(ident.values[0], char.UTF8String(), "identification"))
            witness = identity_proof_witness(secret, req_sequence, identification=name, hash_name=hash_name,
                                             mac_hash_name=mac_name)
            if version == 2:
                value = der.seq(der.algorithm(HASH_OID[hash_name]), der.algorithm(HMAC_OID[mac_name]),
                                der.octets(witness))
                controls.append(Control(bpid, oids.ID_CMC_IDENTITY_PROOF_V2, (value,)))
            else:
                controls.append(Control(bpid, oids.ID_CMC_IDENTITY_PROOF, (der.octets(witness),)))
        return der.seq(
            der.seq(*(c.encode() for c in controls)),
            req_sequence,
            der.seq(*(der.seq(der.integer(b), ci) for b, ci in self._contents)),
            der.seq(*(der.seq(der.integer(o.body_part_id), der.oid(o.msg_type), o.value) for o in self._others)),
        )

    def sign(self, signers: cms.CmsSigner | Sequence[cms.CmsSigner], *,
             certificates: Iterable[x509.Certificate] = (), signing_time: dt.datetime | None = None) -> bytes:
        return sign_pki_data(self.build(), signers, certificates=certificates, signing_time=signing_time)
