"""`kipuka serve`: check the configuration, migrate the database, start workers.

With [server] workers = 1 the single worker runs in this process. With more,
this process forks them (they share the port through SO_REUSEPORT, after this
process made sure no other process listens there), forwards
SIGHUP and SIGTERM to them, and restarts one that dies unexpectedly.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path

from kipuka.config import ListenOverrides, load_config
from kipuka.server.logs import configure_logging
from kipuka.ra.otp import OtpKeyring
from kipuka.server.worker import check_address_free, run_worker
from kipuka.store import Store

log = logging.getLogger("kipuka.server")
EARLY_EXIT = 3.0  # a worker that dies this soon after starting will not do better on restart


def serve(config_path: Path, overrides: ListenOverrides | None = None) -> int:
    overrides = overrides or ListenOverrides()
    config = overrides.apply(load_config(config_path))
    configure_logging(config.server.log_format)
    OtpKeyring.load(config.otp.key_file)
    store = Store(config.database.url)
    if config.database.migrate_on_start:
        applied = store.migrate()
        if applied:
            log.info("database migrated to version %d", applied[-1])
    store.close()
    for key, listen in (("server.listen", config.server.listen), ("admin.listen", config.admin.listen),
                        ("revocation.listen", config.revocation.listen)):
        if listen:
            check_address_free(listen, key)  # SO_REUSEPORT is for this server's own workers only
    workers = config.server.workers or os.cpu_count() or 1
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Before the fork, so that every worker's metrics land where a scrape sums them.
        metrics_dir = tempfile.mkdtemp(prefix="kipuka-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if workers == 1:
        run_worker(config_path, overrides)
        return 0
    return _supervise(config_path, overrides, workers)


def _supervise(config_path: Path, overrides: ListenOverrides, count: int) -> int:
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            code = 0
            try:
                run_worker(config_path, overrides)
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for _ in range(count):
        spawn()
    log.info("started %d workers", count)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if time.monotonic() - started < EARLY_EXIT:
            log.error("worker %d exited at start-up (code %d); stopping", pid, code)
            forward(signal.SIGTERM, None)
            stopping = True
            continue
        log.warning("worker %d exited (code %d); starting a new one", pid, code)
        spawn()
    return 0


