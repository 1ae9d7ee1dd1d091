"""What monitoring reads: a JSON status file and, optionally, a Prometheus textfile.

Both are rewritten atomically after every pass, one entry per certificate:
its expiry, when it renews, the last attempt and its outcome, failures in a
row, when the agent looks again. The textfile is for node_exporter's
textfile collector (`--collector.textfile.directory`); it is written with
prometheus_client, whose `write_to_textfile` renames into place too.
"""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509

from kipuka.client.agent.config import AgentConfig
from kipuka.client.agent.runner import Result
from kipuka.client.agent.schedule import renewal_time
from kipuka.client.agent.state import StateDir
from kipuka.client.describe import certificate_doc, iso, parse_iso
from kipuka.client.files import write_atomic

RESULTS = ("enrolled", "renewed", "not_due", "pending", "waiting", "failed")


def entries(config: AgentConfig, states: StateDir, results: dict[str, Result] | None = None) -> list[dict]:
    """The status of every configured certificate, from the files (and this pass's results)."""
    out = []
    for cfg in config.certificates:
        state = states.load(cfg.name)
        doc: dict = {"name": cfg.name, "certificate": cfg.cert, "key": cfg.key, "server": cfg.server,
                     "label": cfg.label, "pending": states.journal(cfg.name).exists(),
                     "last_attempt": state.last_attempt, "last_success": state.last_success,
                     "last_result": state.last_result, "last_error": state.last_error,
                     "last_exit_code": state.last_exit_code, "failures": state.failures,
                     "next_attempt": state.next_attempt, "hook_exit_code": state.hook_exit_code}
        cert = _read(cfg.cert)
        if cert is not None:
            doc.update({k: v for k, v in certificate_doc(cert).items() if k in ("serial", "not_before", "not_after",
                                                                                "subject")})
            doc["renew_at"] = iso(renewal_time(cert, cfg.renew_before, cfg.jitter, cfg.name))
        result = (results or {}).get(cfg.name)
        if result is not None:
            doc["action"] = result.action
            doc["exit_code"] = result.exit_code
            doc["message"] = result.message
        out.append(doc)
    return out


def write(config: AgentConfig, docs: list[dict]) -> None:
    now = iso(dt.datetime.now(dt.timezone.utc))
    if config.status_file:
        write_atomic(config.status_file, json.dumps({"generated": now, "certificates": docs}, indent=1,
                                                    sort_keys=True).encode(), 0o644)
    if config.prometheus_textfile:
        _write_textfile(config.prometheus_textfile, docs)


def _write_textfile(path: str, docs: list[dict]) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    labels = ["name"]
    gauges = {
        "not_after": Gauge("kipuka_est_certificate_not_after_timestamp_seconds",
                           "When the certificate in place expires", labels, registry=registry),
        "not_before": Gauge("kipuka_est_certificate_not_before_timestamp_seconds",
                            "When the certificate in place became valid", labels, registry=registry),
        "renew_at": Gauge("kipuka_est_certificate_renew_timestamp_seconds",
                          "When the agent renews the certificate", labels, registry=registry),
        "last_attempt": Gauge("kipuka_est_last_attempt_timestamp_seconds",
                              "Last enrollment or renewal attempt", labels, registry=registry),
        "last_success": Gauge("kipuka_est_last_success_timestamp_seconds",
                              "Last successful enrollment or renewal", labels, registry=registry),
        "next_attempt": Gauge("kipuka_est_next_attempt_timestamp_seconds",
                              "Earliest next attempt (back-off or the server's Retry-After)", labels,
                              registry=registry),
    }
    failures = Gauge("kipuka_est_consecutive_failures", "Failed attempts in a row", labels, registry=registry)
    pending = Gauge("kipuka_est_pending", "1 while a request is held by the server (202)", labels, registry=registry)
    result = Gauge("kipuka_est_last_result", "1 for the outcome of the last attempt", ["name", "result"],
                   registry=registry)
    for doc in docs:
        name = doc["name"]
        for key, gauge in gauges.items():
            if doc.get(key):
                gauge.labels(name).set(parse_iso(doc[key]).timestamp())
        failures.labels(name).set(doc.get("failures") or 0)
        pending.labels(name).set(1 if doc.get("pending") else 0)
        for outcome in RESULTS:
            result.labels(name, outcome).set(1 if doc.get("last_result") == outcome else 0)
    write_to_textfile(path, registry)


def _read(path: str) -> x509.Certificate | None:
    try:
        with open(path, "rb") as fh:
            return x509.load_pem_x509_certificates(fh.read())[0]
    except (OSError, ValueError):
        return None
