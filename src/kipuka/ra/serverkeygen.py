"""Server-side key generation (RFC 7030 4.4): policy, key making, delivery and escrow.

The request is authorized like /simpleenroll (`Authority.authorize`: OTP or
mTLS, the same label policy and name rules); the CSR gives the subject, names
and delivery attributes. Its signature and key are ignored (RFC 7030 §4.4.1),
except that the key's type says which key type the client would like (when the
label allows that type) and, for kipuka's csr-key delivery, the key is whom to
encrypt to: then it must meet the label's key rules and the signature must
verify. Then, in this order, so that a failure never leaves a certificate
without its key or a key outside its archive:

1. the key is made (off the event loop, or taken from the in-memory pool);
2. the key part is built: PKCS#8, or EnvelopedData(SignedData(key)) signed by
   the label's CA;
3. with escrow, the key is encrypted to the escrow certificate;
4. the certificate is signed and recorded in one transaction with the OTP
   spend and the escrow row (`ra.issuance`).

Nothing keeps a reference to the private key after the request returns: the
only copy that survives is the escrow ciphertext. Keys are never logged.

A retry after a lost response cannot get the same key back (the server does
not have it): with a single-use OTP it is refused as "OTP already used", and an
escrowed key can be recovered by an operator with `kipuka keys recover`.
Labels that hold enrollments for approval cannot serve serverkeygen (the key
would have to be kept until the approval): such a request is a 403.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kipuka import metrics, pq
from kipuka.config import Config, Label
from kipuka.ca.base import IssueRequest, Issued, forwards_requests
from kipuka.errors import Disabled, Forbidden, InternalError
from kipuka.keydelivery import one_asymmetric_key, server_generated_key_cms
from kipuka.ra import csr as csrcheck
from kipuka.ra import delivery as deliveries
from kipuka.ra.escrow import EscrowTarget
from kipuka.ra.kek import KekTable
from kipuka.ra.keygen_request import read_ask
from kipuka.ra.keymaker import GeneratedKey, KeyMaker, executor
from kipuka.ra.requester import Requester
from kipuka.store import AuditEvent, CertRecord
from kipuka.store.escrow import Escrow, EscrowRecord
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import Authorized, LabelRuntime

OP = "serverkeygen"


@runtime_checkable
class ContentSigner(Protocol):
    """The optional CA capability serverkeygen needs: a key and certificate to sign key packages."""

    def content_signer(self) -> tuple[object, x509.Certificate]: ...


@dataclass(frozen=True)
class ServerGeneratedKey:
    """The answer: the certificate, and the key part as the delivery says (DER PKCS#8 or CMS)."""

    certificate: x509.Certificate
    key_part: bytes
    delivery: str  # "pkcs8" | "csr-key" | "asymmetric" | "symmetric"


def enabled(config: Config, label: Label) -> bool:
    return config.est.serverkeygen or label.policy.serverkeygen


class ServerKeygen:
    """Built with each Authority: the KEK table, escrow certificates and key pool of one configuration."""

    def __init__(self, authority: "Authority") -> None:
        self.authority = authority
        config = authority.config
        on = [label for label in config.labels.values() if enabled(config, label)]
        self.keks = KekTable.load(config.est.kek_file) if on else KekTable({})
        self.escrow: dict[str, EscrowTarget] = {}
        for label in on:
            where = f"labels.{label.name}" if label.name else "policy"
            if not label.policy.serverkeygen_key_types or not label.policy.serverkeygen_deliveries:
                raise ValueError(f"{where}: serverkeygen needs at least one key type and one delivery")
            if label.policy.escrow and label.policy.escrow_cert is not None:
                self.escrow[label.name] = EscrowTarget.load(label.policy.escrow_cert)
            ca = authority.cas[label.ca]
            if not isinstance(ca, ContentSigner) and set(label.policy.serverkeygen_deliveries) - {deliveries.PKCS8}:
                raise ValueError(f"{where}: CA {label.ca!r} cannot sign server-generated key packages; with this "
                                 'back end serverkeygen_deliveries can only be ["pkcs8"]')
        self.keys = KeyMaker(config.est.keygen_pool,
                             [kt for label in on for kt in label.policy.serverkeygen_key_types])

    async def serverkeygen(self, label: str, csr_der: bytes, who: Requester) -> ServerGeneratedKey:
        a = self.authority
        rt = a.runtime(label)
        policy = rt.label.policy
        if not enabled(a.config, rt.label):
            raise Disabled("server-side key generation (serverkeygen) is not enabled on this "
                           + (f"label ({label})" if label else "path"))
        if policy.require_approval:
            entity = who.basic.entity if who.basic else ""
            await a.trail.reject(rt, OP, who, entity, Forbidden(
                "this label holds enrollments for approval; serverkeygen cannot wait for approval "
                "(the server does not keep generated keys)"))
        # RFC 7030 §4.4.1: the server MUST ignore the CSR's public key values and signature ...
        auth = await a.authorize(rt, OP, csr_der, who, proof_of_possession=False)
        ask = await a.trail.guard(rt, OP, who, auth.entity, lambda: read_ask(csr_der))
        how = await a.trail.guard(rt, OP, who, auth.entity, lambda: deliveries.choose(
            policy, ask, auth.csr, who.client_cert, self.keks, rt.label.name, auth.entity))
        if how.kind == deliveries.CSR_KEY:
            # ... but kipuka's csr-key delivery encrypts to that key: then it must be a key the
            # policy accepts, held by the requester (the CSR's signature proves it).
            await a.trail.guard(rt, OP, who, auth.entity,
                                lambda: csrcheck.check_proof_of_possession(auth.csr, policy))
        if auth.otp is not None:
            await a.check_otp_usable(auth, who, redeliver=False)
        key_type = choose_key_type(policy.serverkeygen_key_types, auth.csr)
        if getattr(rt.ca, "archives_keys", False):  # the CA's own key archive (Dogtag's KRA) makes the key
            return await self._from_ca_archive(rt, auth, who, how, key_type)
        key = await self.keys.new_key(key_type)
        target = self.escrow.get(rt.label.name)
        # Building the CMS layers is ~10 ms of pure-Python ASN.1 per key: a worker thread, not the loop.
        key_part, ciphertext = await asyncio.get_running_loop().run_in_executor(
            executor(), self._seal, rt.ca, key, how, target)
        archive = self._archiver(rt.label.name, rt.ca.id, target, ciphertext, auth, who)
        enrolled = await a.issuance.issue(rt, OP, who, auth.entity, auth.auth, auth.csr, auth.san, otp=auth.otp,
                                  pubkey=_spki_sha256(key), credential=auth.credential, public_key=key.public_key(),
                                  archive=archive, reason=f"key {key_type}, delivery {how.kind}"
                                  + (", escrowed" if archive else ""),
                                  csr_der=_csr_for(key, auth) if forwards_requests(rt.ca) else None)
        metrics.SERVER_KEYS.labels(rt.label.name, key_type, how.kind).inc()
        return ServerGeneratedKey(enrolled.certificate, key_part, how.kind)  # type: ignore[union-attr]

    async def _from_ca_archive(self, rt: "LabelRuntime", auth: "Authorized", who: Requester,
                               how: deliveries.Delivery, key_type: str) -> ServerGeneratedKey:
        """The CA generates and archives the key, and hands it over for delivery; kipuka keeps no copy."""
        a = self.authority
        made: list[GeneratedKey] = []

        async def sign(req: IssueRequest) -> Issued:
            issued, pkcs8 = await rt.ca.issue_with_archived_key(req, key_type)  # type: ignore[attr-defined]
            key = serialization.load_der_private_key(pkcs8, password=None)
            if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) or \
                    _spki(key.public_key()) != _spki(issued.certificate.public_key()):
                raise InternalError("the CA's key archive returned a key that does not match its certificate")
            made.append(key)
            return issued

        enrolled = await a.issuance.issue(rt, OP, who, auth.entity, auth.auth, auth.csr, auth.san, otp=auth.otp,
                                  credential=auth.credential, sign=sign,
                                  reason=f"key {key_type} generated and archived by the CA, delivery {how.kind}")
        key_part, _ = await asyncio.get_running_loop().run_in_executor(executor(), self._seal, rt.ca, made[-1],
                                                                       how, None)
        metrics.SERVER_KEYS.labels(rt.label.name, key_type, how.kind).inc()
        return ServerGeneratedKey(enrolled.certificate, key_part, how.kind)  # type: ignore[union-attr]

    @staticmethod
    def _seal(ca: object, key: GeneratedKey, how: deliveries.Delivery,
              target: EscrowTarget | None) -> tuple[bytes, bytes | None]:
        """The key part as the delivery says, and the escrow ciphertext: both before anything is recorded."""
        if not how.encrypted:
            key_part = one_asymmetric_key(key)
        else:
            signer_key, signer_cert = ca.content_signer()  # type: ignore[attr-defined]
            key_part = server_generated_key_cms(key, signer_key, signer_cert, how.recipient,  # type: ignore[arg-type]
                                                key_transport=how.key_transport,
                                                content_key_bytes=how.content_key_bytes)
        return key_part, target.archive(key) if target is not None else None

    @staticmethod
    def _archiver(label: str, ca_id: str, target: EscrowTarget | None, ciphertext: bytes | None,
                  auth: "Authorized", who: Requester) -> Callable[[CertRecord], Escrow] | None:
        if target is None or ciphertext is None:
            return None

        def archive(record: CertRecord) -> Escrow:
            now = utcnow()
            return Escrow(
                EscrowRecord(ca_id=ca_id, serial=record.serial, escrow_cert_sha256=target.sha256,
                             ciphertext=ciphertext, created_at=now),
                AuditEvent(event="key.escrow", outcome="success", label=label, entity=auth.entity,
                           client_addr=who.client_addr, auth=auth.auth, ca_id=ca_id, serial=record.serial,
                           reason=f"archived to escrow certificate sha256:{target.sha256[:16]}", at=now))
        return archive


def choose_key_type(allowed: tuple[str, ...], csr: x509.CertificateSigningRequest) -> str:
    """The CSR key's own type when the label allows it (that is how a client asks), else the label's first."""
    asked = key_type_name(csr.public_key())
    return asked if asked in allowed else allowed[0]


def key_type_name(public_key: object) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, "")
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    return pq.key_type(public_key) or ""


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _spki_sha256(key: GeneratedKey) -> str:
    return hashlib.sha256(_spki(key.public_key())).hexdigest()


def _csr_for(key: GeneratedKey, auth: "Authorized") -> bytes:
    """A CSR signed by the generated key, for a back end that forwards CSRs (an upstream EST server):
    the requester's subject and names, the new key."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(auth.csr.subject)
    if auth.san is not None:
        builder = builder.add_extension(auth.san, critical=False)
    return builder.sign(key, None if pq.is_mldsa(key) else hashes.SHA256()).public_bytes(serialization.Encoding.DER)
