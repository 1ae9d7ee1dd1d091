"""Revocation policy: revoking, keeping each CA's CRL fresh, and answering OCSP.

The CA back end signs; the store keeps revocations, CRL numbers and the latest
CRL, so every node publishes the same numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography import x509
from cryptography.x509 import ocsp

from pyasn1.codec.der import decoder
from pyasn1_modules import rfc5280

from kipuka.ca.base import CertificateAuthority, RemoteRevoker, signs_revocation
from kipuka.ca.revocation import RFC5280_REASON_NAMES, OcspAnswer, RevokedEntry, unsuccessful_ocsp
from kipuka.config import RevocationConfig
from kipuka.errors import BadRequest, NotFound
from kipuka.store import AsyncStore, AuditEvent, StoredCRL
from kipuka.store.records import utcnow

OCSP_VALIDITY = dt.timedelta(hours=1)
REASONS = tuple(RFC5280_REASON_NAMES)


@dataclass(frozen=True)
class OcspQuery:
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    serial: int
    nonce: bytes | None


class Revocation:
    def __init__(self, cas: dict[str, CertificateAuthority], store: AsyncStore, cfg: RevocationConfig) -> None:
        self.cas = cas
        self.store = store
        self.cfg = cfg
        self._hashes: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def urls(self, ca_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(CRL distribution points, OCSP URLs) to put in certificates of a CA."""
        if not self.cfg.base_url or not self._publishes(ca_id):
            return (), ()
        base = self.cfg.base_url.rstrip("/")
        return (f"{base}/crl/{ca_id}.crl",), (f"{base}/ocsp/{ca_id}",)

    async def revoke(self, serial: str, reason: str, actor: str, ca_id: str | None = None) -> int:
        """Revoke by hex serial (in one CA, or every CA that issued it); republish the CRLs."""
        if reason not in RFC5280_REASON_NAMES or reason == "removeFromCRL":
            raise BadRequest(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS[:-1])}")
        now = utcnow()
        holders = [r.ca_id for r in await self.store.certificate(serial) if ca_id in (None, r.ca_id)]
        for holder in sorted(set(holders)):  # the CA first: never show revoked what the CA still calls good
            ca = self.cas.get(holder)
            if isinstance(ca, RemoteRevoker):
                await ca.revoke(int(serial, 16), x509.ReasonFlags(reason))
        count = await self.store.revoke_certificate(serial, reason, now, AuditEvent(
            event="cert.revoke", outcome="success", auth=actor, serial=serial, reason=reason,
            ca_id=ca_id or ",".join(holders), at=now), ca_id)
        for holder in set(holders):
            if holder in self.cas and self._publishes(holder):
                await self.publish_crl(holder)
        return count

    async def revoke_many(self, targets: list[tuple[str, str]], reason: str, actor: str) -> list[tuple[str, str]]:
        """Revoke (ca_id, serial) pairs in one transaction, one audit event each; each CRL re-signed once."""
        if reason not in RFC5280_REASON_NAMES or reason == "removeFromCRL":
            raise BadRequest(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS[:-1])}")
        for ca_id, serial in targets:  # the CA first: never show revoked what the CA still calls good
            ca = self.cas.get(ca_id)
            if isinstance(ca, RemoteRevoker):
                await ca.revoke(int(serial, 16), x509.ReasonFlags(reason))
        done = await self.store.revoke_certificates(targets, reason, utcnow(), actor)
        for holder in {ca_id for ca_id, _ in done}:
            if self._publishes(holder):
                await self.publish_crl(holder)
        return done

    async def publish_crl(self, ca_id: str) -> StoredCRL:
        ca = self._ca(ca_id)
        now = utcnow().replace(microsecond=0)
        number = await self.store.next_crl_number(ca_id, now)
        entries = [RevokedEntry(int(serial, 16), at, reason)
                   for serial, at, reason in await self.store.revoked_entries(ca_id, now)]
        next_update = now + dt.timedelta(seconds=self.cfg.crl_validity)
        der = await ca.sign_crl(entries, number, now, next_update)
        crl = StoredCRL(ca_id, number, now, next_update, der)
        await self.store.save_crl(crl)
        return crl

    async def crl(self, ca_id: str) -> StoredCRL:
        """The current CRL of a CA, made now if there is none or it is due for refresh."""
        self._ca(ca_id)
        crl = await self.store.latest_crl(ca_id)
        if crl is None or utcnow() >= crl.this_update + dt.timedelta(seconds=self.cfg.crl_refresh):
            crl = await self.publish_crl(ca_id)
        return crl

    async def refresh_due(self) -> None:
        for ca_id in self.cas:
            if self._publishes(ca_id):
                await self.crl(ca_id)

    async def ocsp(self, ca_id: str, query: OcspQuery) -> bytes:
        ca = self._ca(ca_id)
        issuer = ca.ca_certificates()[0]
        cache_key = (ca_id, query.hash_algorithm.name)
        if cache_key not in self._hashes:  # the issuer's CertID hashes never change: compute once
            self._hashes[cache_key] = issuer_hashes(issuer, query.hash_algorithm)
        name_hash, key_hash = self._hashes[cache_key]
        if (query.issuer_name_hash, query.issuer_key_hash) != (name_hash, key_hash):
            return unsuccessful_ocsp(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        record = await self.store.certificate_status(ca_id, format(query.serial, "x"))
        if record is None:
            status, at, reason = "unknown", None, None
        elif record.revoked_at is not None:
            status, at, reason = "revoked", record.revoked_at, record.revocation_reason
        else:
            status, at, reason = "good", None, None
        now = utcnow().replace(microsecond=0)
        answer = OcspAnswer(query.issuer_name_hash, query.issuer_key_hash, query.hash_algorithm, query.serial,
                            status, at, reason)
        return await ca.sign_ocsp(answer, now, now + OCSP_VALIDITY, query.nonce)

    def _ca(self, ca_id: str) -> CertificateAuthority:
        try:
            ca = self.cas[ca_id]
        except KeyError:
            raise NotFound(f"unknown CA {ca_id!r}") from None
        if not signs_revocation(ca):
            raise NotFound(f"CA {ca_id!r} publishes its own CRL and OCSP; kipuka does not sign them")
        return ca

    def _publishes(self, ca_id: str) -> bool:
        return ca_id in self.cas and signs_revocation(self.cas[ca_id])


def issuer_hashes(issuer, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    """RFC 6960 CertID hashes: of the issuer's DER name and of its public key BIT STRING."""
    name_hash = hashes.Hash(algorithm)
    name_hash.update(issuer.subject.public_bytes())
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = _spki_key_bits(spki)
    key_hash = hashes.Hash(algorithm)
    key_hash.update(key_bits)
    return name_hash.finalize(), key_hash.finalize()


def _spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a DER SubjectPublicKeyInfo (pyasn1 parses it)."""
    info, _ = decoder.decode(spki, asn1Spec=rfc5280.SubjectPublicKeyInfo())
    return info["subjectPublicKey"].asOctets()


