"""Operations traps found by the red-team pass of issue #16 (item 8)."""

from __future__ import annotations

import signal
import stat
import time

from tests.helpers import admin_call, edit_config, enroll_identity, run_cli


def _wait_log(srv, text: str, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.log.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged {count} times:\n{srv.log.read_text()[-2000:]}")


def _hup(srv, expect: str) -> None:
    before = srv.log.read_text(errors="replace").count(expect)
    srv.proc.send_signal(signal.SIGHUP)
    _wait_log(srv, expect, before + 1)


def test_a_second_deployment_on_the_same_port_refuses_to_start(server, tmp_path):
    other = tmp_path / "other"
    run_cli("init", str(other), "--admin-listen", "", "--revocation-listen", "")
    out = run_cli("serve", "-c", str(other / "kipuka.toml"), "--listen", f"127.0.0.1:{server.port}", check=False)
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}" in out.stderr and "already listening" in out.stderr
    assert server.get("cacerts").status_code == 200  # the first one still answers, alone


def test_database_file_is_owner_only(server):
    db = server.dir / "kipuka.db"
    if not db.exists():  # KIPUKA_TEST_DATABASE=postgresql://...
        return
    for path in (db, db.with_name("kipuka.db-wal")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_init_says_where_the_root_key_is_and_how_to_take_it_offline(tmp_path):
    out = run_cli("init", str(tmp_path / "d"))
    assert f"the root CA key is {tmp_path / 'd' / 'private' / 'root.key'}" in out.stderr
    assert "Take it offline" in out.stderr and "--root-key-out" in out.stderr
    (tmp_path / "media").mkdir()
    elsewhere = tmp_path / "media" / "root.key"
    out = run_cli("init", str(tmp_path / "e"), "--root-key-out", str(elsewhere))
    assert elsewhere.exists() and not (tmp_path / "e" / "private" / "root.key").exists()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o600 and f"the root CA key is {elsewhere}" in out.stderr
    assert "OK" in run_cli("config", "check", "-c", str(tmp_path / "e" / "kipuka.toml")).stderr


def test_sighup_applies_an_added_and_a_removed_admin_client_ca_fully(fresh_server, tmp_path):
    srv = fresh_server()
    ident = enroll_identity(srv, tmp_path, "admin-ops")
    cert = (ident[0], ident[1])
    assert admin_call(srv, "GET", "/admin/ca", cert=cert).status_code == 401  # no client_ca: not an admin
    edit_config(srv.config, {r'^# client_ca = "tls/admin-ca.pem".*$': 'client_ca = "tls/client-ca.pem"',
                             r"^subjects = \[\].*$": 'subjects = ["CN=admin-ops.example.com"]'})
    _hup(srv, "configuration reloaded")
    assert admin_call(srv, "GET", "/admin/ca", cert=cert).status_code == 200  # added: applied at once
    edit_config(srv.config, {r'^client_ca = "tls/client-ca.pem"\n(subjects)': r"\1"})
    edit_config(srv.config, {r'^subjects = \["CN=admin-ops.example.com"\]': "subjects = []"})
    _hup(srv, "configuration reloaded")
    r = admin_call(srv, "GET", "/admin/ca", cert=cert)  # removed: no certificate asked for, no reset
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_a_failed_reload_names_the_file(fresh_server):
    srv = fresh_server()
    missing = srv.dir / "tls" / "gone.pem"
    edit_config(srv.config, {r'^cert = "tls/server.pem".*$': 'cert = "tls/gone.pem"'})
    _hup(srv, "reload failed")
    line = next(x for x in srv.log.read_text().splitlines() if "reload failed" in x)
    assert str(srv.config) in line and str(missing) in line, line
    assert srv.get("cacerts").status_code == 200
