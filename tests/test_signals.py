"""Signals to `kipuka serve`: SIGTERM drains and exits 0, SIGHUP reloads in place.

Both with `workers = 1` (the serving process is `kipuka serve` itself) and
`workers = 2` (a supervisor that forwards the signals to two forked workers).
Linux only: process and socket facts are read from /proc.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import CERTS_ONLY, Server, b64, certs_from, certs_in_body, edit_config, make_csr, unique

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["workers=1", "workers=2"])


# --- process and socket facts ------------------------------------------------------------

def children_of(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(entry))
    return kids


def serving_pids(srv: Server, workers: int) -> set[int]:
    """The processes that serve: `kipuka serve` itself, or its forked workers."""
    if workers == 1:
        return {srv.proc.pid}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = children_of(srv.proc.pid)
        if len(kids) == workers and all(listening_sockets(srv.port).get(k) for k in kids):
            return kids
        time.sleep(0.1)
    raise AssertionError(f"expected {workers} listening workers, found {children_of(srv.proc.pid)}")


def listening_sockets(port: int) -> dict[int, set[int]]:
    """pid -> inodes of the TCP sockets listening on `port` that the pid holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(cols[9]))
    held: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in inodes:
                held.setdefault(int(entry), set()).add(int(m.group(1)))
    return held


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_all(srv: Server, pids: set[int]) -> None:
    """SIGKILL a server that did not stop, workers first (they would outlive a killed supervisor)."""
    for pid in pids - {srv.proc.pid}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    srv.proc.kill()
    srv.proc.wait()


def log_count(srv: Server, text: str) -> int:
    return srv.log.read_text(errors="replace").count(text)


def wait_log(srv: Server, text: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_count(srv, text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} logged {log_count(srv, text)} times, expected {count}:\n"
                         f"{srv.log.read_text()[-2000:]}")


def start(fresh_server, workers: int) -> Server:
    return fresh_server(replacements={r"^workers = 1\b": f"workers = {workers}"})


# --- enrollment helpers ------------------------------------------------------------------

def validity_days(srv: Server, label: str | None) -> float:
    entity = unique()
    otp = srv.otp(entity, "--uses", "20", "--label", "any")
    return _validity(srv, label, entity, otp)


def _validity(srv: Server, label: str | None, entity: str, otp: str) -> float:
    _, der = make_csr(f"{entity}.example.com")
    cert = certs_from(srv.post("simpleenroll", b64(der), label=label, auth=(entity, otp)))[0]
    return (cert.not_valid_after_utc - cert.not_valid_before_utc) / dt.timedelta(days=1)


def assert_days(srv: Server, days: int, entity: str, otp: str, n: int) -> None:
    """n enrollments on iot-fleet (each a new connection, so both workers get some) all last ~days."""
    for _ in range(n):
        got = _validity(srv, "iot-fleet", entity, otp)
        assert days - 0.1 <= got <= days + 0.1, f"iot-fleet certificate valid {got:.2f} days, expected {days}"


def sighup(srv: Server, workers: int, expect: str) -> None:
    before = log_count(srv, expect)
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, expect, before + workers)


# --- SIGHUP ------------------------------------------------------------------------------

@WORKERS
def test_sighup_reloads_configuration_in_place(fresh_server, workers: int):
    srv = start(fresh_server, workers)
    pid = srv.proc.pid
    pids = serving_pids(srv, workers)
    sockets = listening_sockets(srv.port)
    assert set(sockets) == pids, (sockets, pids)
    entity = unique()
    otp = srv.otp(entity, "--uses", "100", "--label", "any")  # iot-fleet and the unlabeled path
    n = 2 * workers
    assert_days(srv, 90, entity, otp, n)

    edit_config(srv.config, {r"^validity_days = 90$": "validity_days = 30"})
    sighup(srv, workers, "configuration reloaded")
    assert_days(srv, 30, entity, otp, n)
    assert srv.proc.poll() is None and srv.proc.pid == pid
    assert serving_pids(srv, workers) == pids, "workers were replaced"
    assert listening_sockets(srv.port) == sockets, "the listening socket changed"

    # an invalid file (TOML syntax, then a value out of range) keeps the old configuration
    good = srv.config.read_text()
    for broken in (good + "\n[labels.iot-fleet\n", good.replace("validity_days = 30", "validity_days = 0")):
        srv.config.write_text(broken)
        sighup(srv, workers, "reload failed")
        assert srv.proc.poll() is None and serving_pids(srv, workers) == pids
        assert_days(srv, 30, entity, otp, n)
        assert listening_sockets(srv.port) == sockets

    # and a later good file is picked up again
    srv.config.write_text(good.replace("validity_days = 30", "validity_days = 60"))
    sighup(srv, workers, "configuration reloaded")
    assert_days(srv, 60, entity, otp, n)
    assert srv.proc.poll() is None and srv.proc.pid == pid and serving_pids(srv, workers) == pids
    assert validity_days(srv, None) == pytest.approx(365, abs=0.1)  # the rest of the file still applies


# --- SIGTERM -----------------------------------------------------------------------------

class SlowRequest:
    """An enrollment whose body is sent in two halves: in flight for as long as we like."""

    def __init__(self, srv: Server, entity: str, otp: str) -> None:
        ctx = ssl.create_default_context(cafile=srv.ca_bundle)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")  # handshake done: accepted
        self.key, der = make_csr(f"{entity}.example.com")
        self.body = b64(der)
        auth = base64.b64encode(f"{entity}:{otp}".encode()).decode()
        head = (f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost:{srv.port}\r\n"
                f"Content-Type: application/pkcs10\r\nAuthorization: Basic {auth}\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n").encode()
        self.sock.sendall(head + self.body[:len(self.body) // 2])

    def finish(self, timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(self.body[len(self.body) // 2:])
        self.sock.settimeout(timeout)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except TimeoutError:
            raise AssertionError(f"no complete response within {timeout} s of sending the rest of the body "
                                 f"(got {len(data)} bytes)") from None
        finally:
            self.sock.close()
        assert data, "connection closed without a response"
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert int(headers.get("content-length", len(body))) == len(body), "truncated response"
        return status, headers, body


def load_loop(srv: Server, entity: str, otp: str, stop: threading.Event, log: list, lock: threading.Lock) -> None:
    """Enroll over and over, one connection per request, logging (t_sent, status|error, complete)."""
    ctx = ssl.create_default_context(cafile=srv.ca_bundle)
    while not stop.is_set():
        _, der = make_csr(f"{entity}.example.com")
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=20)
        t_sent = None
        try:
            conn.request("POST", "/.well-known/est/simpleenroll", body=b64(der), headers={
                "Content-Type": "application/pkcs10",
                "Authorization": "Basic " + base64.b64encode(f"{entity}:{otp}".encode()).decode()})
            t_sent = time.monotonic()
            resp = conn.getresponse()
            body = resp.read()
            complete = True
            if resp.status == 200:
                try:
                    assert resp.getheader("Content-Type") == CERTS_ONLY
                    certs_in_body(body)
                except Exception:  # noqa: BLE001
                    complete = False
            entry = (t_sent, resp.status, complete)
        except (OSError, http.client.HTTPException) as exc:
            entry = (t_sent, type(exc).__name__, False)
            if isinstance(exc, ConnectionRefusedError):
                time.sleep(0.02)
        finally:
            conn.close()
        with lock:
            log.append(entry)


@WORKERS
def test_sigterm_under_load_answers_requests_sent_before_it_and_exits_0(fresh_server, workers: int):
    srv = start(fresh_server, workers)
    pids = serving_pids(srv, workers)
    entity = unique()
    otp = srv.otp(entity, "--uses", "1000")
    srv.ca_bundle  # noqa: B018 - fetched once before the threads use it

    log: list = []
    lock = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=load_loop, args=(srv, entity, otp, stop, log, lock), daemon=True)
               for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t_sig = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    elapsed = time.monotonic() - t_sig
    stop.set()
    if code is None:
        kill_all(srv, pids)
    for t in threads:
        t.join(30)
    with lock:
        entries = list(log)
    late = [(None if e[0] is None else round(e[0] - t_sig, 3), e[1]) for e in entries
            if e[1] != "ConnectionRefusedError" and (e[0] is None or e[0] > t_sig - 0.3)]
    assert code is not None, f"still running 10 s after SIGTERM; requests around SIGTERM (t_sent - t_sigterm, " \
                             f"outcome): {late}"
    assert code == 0, srv.log.read_text()[-2000:]
    assert elapsed < 5, f"took {elapsed:.1f} s to stop; requests around SIGTERM: {late}"
    assert not any(alive(p) for p in pids), "a worker outlived the supervisor"

    # sent (whole request on the wire) before SIGTERM, with a little slack for the server to read it
    before = [e for e in entries if e[0] is not None and e[0] < t_sig - 0.05]
    assert len(before) >= 10, entries  # there was load
    bad = [e for e in before if e[1] != 200 or not e[2]]
    assert not bad, f"requests sent before SIGTERM without a complete 200: {bad}"
    incomplete = [e for e in entries if isinstance(e[1], int) and not e[2]]
    assert not incomplete, f"responses cut short: {incomplete}"


@WORKERS
def test_sigterm_lets_a_request_still_uploading_its_body_finish(fresh_server, workers: int):
    """A request whose handler is running (headers read, body half sent) when SIGTERM arrives is
    in flight: the server stops accepting, but reads the rest of the body and answers it."""
    srv = start(fresh_server, workers)
    pids = serving_pids(srv, workers)
    entity = unique()
    otp = srv.otp(entity)
    slow = SlowRequest(srv, entity, otp)
    time.sleep(0.3)  # its headers are read and its handler waits for the rest of the body

    t_sig = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        time.sleep(0.5)
        # draining: no new connections, the old one is still served
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        status, headers, body = slow.finish(timeout=5)
        assert status == 200, (status, body[:200])
        assert headers["content-type"] == CERTS_ONLY
        cert = certs_in_body(body)[0]
        assert cert.public_key() == slow.key.public_key()
        assert srv.proc.wait(timeout=10) == 0, srv.log.read_text()[-2000:]
        assert time.monotonic() - t_sig < 5
    finally:
        if srv.proc.poll() is None:  # do not wait out shutdown_timeout in the fixture
            kill_all(srv, pids)


@WORKERS
def test_sigterm_when_idle_exits_0_quickly(fresh_server, workers: int):
    srv = start(fresh_server, workers)
    pids = serving_pids(srv, workers)
    assert srv.get("cacerts").status_code == 200
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        assert srv.proc.wait(timeout=10) == 0, srv.log.read_text()[-2000:]
    finally:
        if srv.proc.poll() is None:
            kill_all(srv, pids)
    assert time.monotonic() - t0 < 3
    assert not any(alive(p) for p in pids)
