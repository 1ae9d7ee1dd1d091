"""What the console's overview and CA pages show beyond the basic admin API shapes:
issuance per hour, each label's policy, and each CA's replicas, chain and CRL.

Plain functions over the Authority and its store; api.py parses the request
and serialises the result (documented in openapi.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kipuka.admin.shapes import iso
from kipuka.ca.base import signs_revocation
from kipuka.config import Config
from kipuka.ra.authority import Authority
from kipuka.store.records import utcnow



async def issuance(authority: Authority, hours: int) -> dict[str, Any]:
    """Certificates issued and requests failed per UTC hour, oldest first, the current hour last."""
    now = utcnow()
    until = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    since = until - dt.timedelta(hours=hours)
    store = authority.store
    issued = await store.issued_per_hour(since, until)
    failed = await store.failures_per_hour(since, until)
    buckets = [since + dt.timedelta(hours=i) for i in range(hours)]
    return {"since": iso(since), "until": iso(until),
            "items": [{"start": iso(b), "issued": issued.get(b, 0), "failed": failed.get(b, 0)} for b in buckets],
            "pending": await store.count_pending()}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def labels(authority: Authority, config: Config) -> list[dict[str, Any]]:
    """Each EST label, its CA and back-end type, and its whole policy."""
    out = []
    for name, rt in sorted(authority.labels.items()):
        policy = {f.name: _plain(getattr(rt.label.policy, f.name)) for f in dataclasses.fields(rt.label.policy)}
        ca_cfg = config.cas.get(rt.ca.id)
        out.append({"name": name, "path": f"/.well-known/est/{name + '/' if name else ''}", "ca": rt.ca.id,
                    "ca_type": ca_cfg.type if ca_cfg else "unknown", "policy": policy})
    return out


def cert_summary(cert: x509.Certificate) -> dict[str, Any]:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": iso(cert.not_valid_after_utc), "sha256": cert.fingerprint(hashes.SHA256()).hex()}


async def ca_details(authority: Authority, config: Config, ca_id: str) -> dict[str, Any]:
    """Replicas (of a pool), the chain decoded, the latest CRL and who signs OCSP."""
    ca = authority.cas[ca_id]
    replicas = [{"name": r.name, "status": "down" if r.down is not None else "ok", "detail": r.down or ""}
                for r in getattr(ca, "replicas", [])]
    publishes = signs_revocation(ca)
    crl = await authority.store.latest_crl(ca_id) if publishes else None
    crl_json = None
    if crl is not None:
        entries = len(x509.load_der_x509_crl(crl.der))
        crl_json = {"number": crl.number, "this_update": iso(crl.this_update),
                    "next_update": iso(crl.next_update), "entries": entries,
                    "fresh": crl.next_update > utcnow()}
    cfg = config.cas.get(ca_id)
    responder = None
    if publishes:
        responder = "the CA key"
        if cfg is not None and cfg.ocsp_cert is not None:
            try:
                delegated = x509.load_pem_x509_certificate(Path(cfg.ocsp_cert).read_bytes())
                responder = f"delegated responder {delegated.subject.rfc4514_string()}"
            except (OSError, ValueError):
                responder = f"delegated responder {cfg.ocsp_cert}"
    return {"replicas": replicas, "chain_info": [cert_summary(c) for c in ca.ca_certificates()],
            "publishes_revocation": publishes, "crl": crl_json, "ocsp_responder": responder}
