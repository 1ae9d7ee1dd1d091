"""Several kipuka nodes sharing one PostgreSQL database, and what happens when one of them, or
the database, fails. Runs against the machine's PostgreSQL (KIPUKA_TEST_DATABASE, default
postgresql://127.0.0.1:5432/test) and, for the outage test, a private PostgreSQL cluster
that the test starts and stops itself."""

from __future__ import annotations

import concurrent.futures as futures
import glob
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.helpers import (Server, admin_call, admin_token, b64, certs_from, db_execute, edit_config, enroll_identity,
                           free_port, make_csr, make_server, new_key, run_cli, unique)

PG_ADMIN = os.environ.get("KIPUKA_TEST_DATABASE") or "postgresql://127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _pg_available(), reason=f"no PostgreSQL at {PG_ADMIN}")


def _database() -> str:
    import psycopg
    name = f"kipuka_cluster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _second_node(a: Server) -> Server:
    """Node B: the same deployment (keys, CAs, OTP hashing key, database), its own ports."""
    b_admin, b_public = free_port(), free_port()
    text = a.config.read_text()
    text = text.replace(f'"127.0.0.1:{a.admin_port}"', f'"127.0.0.1:{b_admin}"')
    text = text.replace(f'"127.0.0.1:{a.public_port}"', f'"127.0.0.1:{b_public}"')
    # Paths in the file are relative to it: keep node B's file in the same directory.
    (a.dir / "kipuka-b.toml").write_text(text)
    b = Server(a.dir, free_port(), config_name="kipuka-b.toml")
    b.admin_port, b.public_port = b_admin, b_public
    b.log = a.dir / "serve-b.log"
    return b


@pytest.fixture
def cluster(tmp_path):
    url = _database()
    a = make_server(tmp_path, replacements={r'^url = "[^"]*".*$': f'url = "{url}"'})
    a.start()
    b = _second_node(a).start()
    a.token = admin_token(a)
    yield a, b
    a.stop()
    b.stop()


def test_one_otp_tried_on_both_nodes_at_once_gives_one_certificate(cluster):
    a, b = cluster
    a.ca_bundle, b.ca_bundle  # fetch the chain before the threads start
    entity = unique()
    otp = a.otp(entity)
    bodies = [b64(make_csr(f"{entity}.example.com")[1]) for _ in range(16)]
    with futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: (a if i % 2 else b).post("simpleenroll", bodies[i], auth=(entity, otp)),
                                range(16)))
    assert sorted(r.status_code for r in answers) == [200] + [401] * 15
    assert len(a.cli("certs", "list", "--entity", entity).stdout.strip().splitlines()) == 1


def test_approve_on_node_a_and_the_retry_on_node_b_gets_the_certificate(tmp_path):
    url = _database()
    a = make_server(tmp_path, replacements={r'^url = "[^"]*".*$': f'url = "{url}"',
                                            r"^require_approval = false.*$": "require_approval = true"}).start()
    b = _second_node(a).start()
    try:
        token = admin_token(a)
        entity, key = unique(), new_key()
        otp = a.otp(entity)
        body = b64(make_csr(f"{entity}.example.com", key)[1])
        assert a.post("simpleenroll", body, auth=(entity, otp)).status_code == 202
        pending = [r for r in admin_call(a, "GET", "/admin/requests", token).json()["items"] if r["entity"] == entity]
        assert admin_call(a, "POST", f"/admin/requests/{pending[0]['id']}/approve", token).status_code == 200
        cert = certs_from(b.post("simpleenroll", body, auth=(entity, otp)))[0]
        assert cert.public_key() == key.public_key()
    finally:
        a.stop()
        b.stop()


def test_revoke_on_node_a_and_reenroll_on_node_b_is_refused(cluster, tmp_path):
    a, b = cluster
    crt, key, cert = enroll_identity(a, tmp_path)
    admin_call(a, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", a.token, json_body={"reason": "keyCompromise"})
    from cryptography.hazmat.primitives import serialization
    k = serialization.load_pem_private_key(open(key, "rb").read(), None)
    r = b.post("simplereenroll", b64(make_csr(cert.subject.rfc4514_string()[3:], k)[1]), cert=(crt, key))
    assert r.status_code == 401 and "revoked" in r.text


def test_killing_a_node_during_2000_enrollments_loses_nothing(cluster, tmp_path):
    a, b = cluster
    ca_bundle = a.ca_bundle
    b.ca_bundle
    entity = unique("load")
    otps = [a.otp(entity, "--uses", "1000"), a.otp(entity, "--uses", "1000")]
    received: dict[str, str] = {}
    lock = threading.Lock()
    session_local = threading.local()

    def one(i: int) -> None:
        node = a if i % 2 else b
        if i == 700:
            b.proc.send_signal(signal.SIGKILL)
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        body = b64(make_csr(f"{entity}.example.com")[1])
        try:
            r = session.post(node.url("simpleenroll"), data=body, auth=(entity, otps[i % 2]), verify=ca_bundle,
                             headers={"Content-Type": "application/pkcs10"}, timeout=30)
        except requests.RequestException:
            return  # node B is gone: the client saw no certificate
        if r.status_code == 200:
            cert = certs_from(r)[0]
            from cryptography.hazmat.primitives import hashes
            with lock:
                assert f"{cert.serial_number:x}" not in received, "a serial was issued twice"
                received[f"{cert.serial_number:x}"] = cert.fingerprint(hashes.SHA256()).hex()

    with futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(one, range(2000)))
    assert len(received) > 1000
    rows = dict(db_execute(a, "SELECT serial, fingerprint_sha256 FROM certificates WHERE entity = :e", {"e": entity}))
    missing = [s for s in received if s not in rows]
    assert not missing, f"{len(missing)} certificates a client received are not in the database"
    assert all(rows[s] == fp for s, fp in received.items())
    (dupes,), = db_execute(a, "SELECT COUNT(*) - COUNT(DISTINCT serial) FROM certificates")
    assert dupes == 0
    out = a.cli("audit", "verify")
    assert out.returncode == 0 and "audit chain OK" in out.stderr


# --- database outage: a private PostgreSQL cluster the test may stop ----------------------------

def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip("PostgreSQL server binaries (Debian postgresql) are not installed")
    return found[-1]


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, run as the postgres user."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "pgdata"
        self.port = free_port()
        self.sock = root / "pgsock"

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        for d in (self.dir.parent, self.sock):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.sock, "postgres")
            for parent in self.dir.parents:
                if str(parent).startswith("/tmp/") or parent == Path("/tmp"):
                    os.chmod(parent, os.stat(parent).st_mode | 0o755)
        out = self._as_postgres(_pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")
        assert out.returncode == 0, out.stderr

    def start(self) -> None:
        out = self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.dir), "-w", "-l", str(self.dir.parent / "pg.log"),
                                "-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1", "start")
        assert out.returncode == 0, out.stderr + out.stdout

    def stop(self) -> None:
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg(tmp_path):
    pg = PrivatePostgres(tmp_path)
    pg.init()
    pg.start()
    yield pg
    pg.stop()


def test_database_outage_gives_fast_500s_then_recovers_without_restart(private_pg, tmp_path):
    srv = make_server(tmp_path, replacements={r'^url = "[^"]*".*$': f'url = "{private_pg.url}"'}).start()
    try:
        srv.ca_bundle
        entity = unique()
        otp = srv.otp(entity, "--uses", "100")
        assert srv.post("simpleenroll", b64(make_csr(f"{entity}.example.com")[1]), auth=(entity, otp)).status_code == 200
        private_pg.stop()
        timings = []
        for _ in range(5):
            started = time.monotonic()
            r = srv.post("simpleenroll", b64(make_csr(f"{entity}.example.com")[1]), auth=(entity, otp))
            timings.append(time.monotonic() - started)
            assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain")
            assert "database" in r.text
        assert max(timings) < 10, timings  # no hang: connect timeout, then fail-fast
        private_pg.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = srv.post("simpleenroll", b64(make_csr(f"{entity}.example.com")[1]), auth=(entity, otp))
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        # No half-done issuance: every use of the OTP that was spent has its certificate.
        (left,), = db_execute(srv, "SELECT uses_left FROM otps WHERE entity = :e", {"e": entity})
        (issued,), = db_execute(srv, "SELECT COUNT(*) FROM certificates WHERE entity = :e", {"e": entity})
        assert left + issued == 100
    finally:
        srv.stop()


def test_migrate_store_moves_every_record_from_sqlite_to_postgresql(tmp_path):
    lab = make_server(tmp_path, replacements={r'^url = "[^"]*".*$': 'url = "sqlite:///kipuka.db"'}).start()
    try:
        for _ in range(3):
            enroll_identity(lab, tmp_path)
        lab.otp(unique())
        lab.cli("audit", "verify")
    finally:
        lab.stop()
    target = _database()
    out = run_cli("migrate-store", "--from", f"sqlite:///{lab.dir / 'kipuka.db'}", "--to", target)
    assert out.returncode == 0, out.stderr
    edit_config(lab.config, {r'^url = "[^"]*".*$': f'url = "{target}"'})
    import sqlite3
    with sqlite3.connect(lab.dir / "kipuka.db") as conn:
        for table in ("certificates", "otps", "audit", "otp_failures", "schema_version", "crl_state"):
            (expected,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            (n,), = db_execute(lab, f"SELECT COUNT(*) FROM {table}")
            assert n == expected, table
    verify = lab.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
    lab.start()  # the production node serves from the moved data
    try:
        assert len(lab.cli("certs", "list").stdout.strip().splitlines()) == 3
    finally:
        lab.stop()
