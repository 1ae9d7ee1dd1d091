"""The post-renew hook: what reloads the service that uses the certificate.

It runs once the new certificate and key are both in place, with what it may
need in its environment:

    KIPUKA_EST_NAME       the [certificates.NAME] entry
    KIPUKA_EST_ACTION     enrolled | renewed
    KIPUKA_EST_CERT       certificate file;  KIPUKA_EST_KEY key file;  KIPUKA_EST_CHAIN chain file (or empty)
    KIPUKA_EST_SERIAL     serial number (hex);  KIPUKA_EST_NOT_AFTER  expiry (ISO 8601, UTC)

A list is run as it is; a string through /bin/sh -c. Its failure is logged
and kept in the status, never undoes the renewal (the files are already
good), and the hook is not run again for the same certificate.
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable

from cryptography import x509

from kipuka.client.agent.config import CertificateConfig
from kipuka.client.describe import iso

MAX_OUTPUT_LINES = 20


def run(cfg: CertificateConfig, cert: x509.Certificate, action: str, log: Callable[[str], None]) -> int | None:
    """The hook's exit code (-1: could not start or timed out); None when there is no hook."""
    if cfg.post_renew is None:
        return None
    argv = ["/bin/sh", "-c", cfg.post_renew] if isinstance(cfg.post_renew, str) else list(cfg.post_renew)
    env = {**os.environ, "KIPUKA_EST_NAME": cfg.name, "KIPUKA_EST_ACTION": action, "KIPUKA_EST_CERT": cfg.cert,
           "KIPUKA_EST_KEY": cfg.key, "KIPUKA_EST_CHAIN": cfg.chain or "",
           "KIPUKA_EST_SERIAL": format(cert.serial_number, "x"), "KIPUKA_EST_NOT_AFTER": iso(cert.not_valid_after_utc)}
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=cfg.hook_timeout, check=False)
    except subprocess.TimeoutExpired:
        log(f"post_renew hook did not finish within {cfg.hook_timeout:g} s and was killed")
        return -1
    except OSError as exc:
        log(f"post_renew hook could not start: {exc.strerror or exc}")
        return -1
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[:MAX_OUTPUT_LINES]:
        log(f"post_renew: {line}")
    if proc.returncode != 0:
        log(f"post_renew hook exited with {proc.returncode}")
    return proc.returncode
