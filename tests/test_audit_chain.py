"""The audit trail is append-only and tamper-evident."""

import time

from tests.helpers import b64, db_execute, make_csr, unique


def _some_events(srv, n=3):
    for _ in range(n):
        entity = unique()
        otp = srv.otp(entity)
        srv.post("simpleenroll", b64(make_csr(f"{entity}.example.com")[1]), auth=(entity, otp))


def test_the_chain_verifies(fresh_server):
    srv = fresh_server()
    _some_events(srv)
    out = srv.cli("audit", "verify")
    assert out.returncode == 0 and "audit chain OK" in out.stderr


def test_editing_one_row_breaks_the_chain_at_that_row(fresh_server):
    srv = fresh_server()
    _some_events(srv)
    srv.cli("audit", "verify")
    (victim,), = db_execute(srv, "SELECT id FROM audit WHERE chain_seq = 3")
    db_execute(srv, "UPDATE audit SET outcome = 'success', reason = 'nothing to see' WHERE id = :id", {"id": victim})
    out = srv.cli("audit", "verify", check=False)
    assert out.returncode == 1 and f"record id {victim} " in out.stderr and "edited" in out.stderr


def test_deleting_a_row_breaks_the_chain(fresh_server):
    srv = fresh_server()
    _some_events(srv)
    srv.cli("audit", "verify")
    db_execute(srv, "DELETE FROM audit WHERE chain_seq = 2")
    out = srv.cli("audit", "verify", check=False)
    assert out.returncode == 1 and "sequence 2 is missing" in out.stderr


def test_the_server_links_rows_by_itself_and_mirrors_them_to_jsonl(fresh_server):
    srv = fresh_server(replacements={r'^# jsonl = "audit.jsonl".*$': 'jsonl = "audit.jsonl"'})
    _some_events(srv, 2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (unchained,), = db_execute(srv, "SELECT COUNT(*) FROM audit WHERE chain_seq IS NULL")
        if unchained == 0:
            break
        time.sleep(0.5)
    assert unchained == 0
    import json
    lines = [json.loads(l) for l in (srv.dir / "audit.jsonl").read_text().splitlines()]
    assert [l["seq"] for l in lines] == list(range(1, len(lines) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(lines, lines[1:]))
