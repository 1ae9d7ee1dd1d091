"""Prometheus metrics.

With several worker processes each keeps its own counters in
PROMETHEUS_MULTIPROC_DIR (set by the supervisor before it forks) and a scrape,
whichever worker answers it, sums them all.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("kipuka_est_requests_total", "EST requests answered", ["operation", "label", "status"])
LATENCY = Histogram("kipuka_est_request_seconds", "EST request latency", ["operation"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
ISSUED = Counter("kipuka_certificates_issued_total", "certificates issued", ["label", "ca"])
OTP_FAILURES = Counter("kipuka_otp_failures_total", "failed OTP attempts")
OTP_LOCKOUTS = Counter("kipuka_otp_lockouts_total", "(entity, address) pairs locked out")
SERVER_KEYS = Counter("kipuka_serverkeygen_keys_total", "server-generated keys delivered",
                      ["label", "key_type", "delivery"])
KEYGEN_SECONDS = Histogram("kipuka_keygen_seconds", "time to generate one server-side key", ["key_type"],
                           buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
PENDING = Gauge("kipuka_pending_requests", "requests waiting for approval", multiprocess_mode="liveall")


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY)
