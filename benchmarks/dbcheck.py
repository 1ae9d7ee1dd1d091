"""After a run: does the database hold exactly what the clients were told? (SQLite and PostgreSQL)

Every 200 is a certificate row, or a re-delivery of one (the same OTP and key again,
within [otp] recovery_window: audited as enroll.redeliver, no new row). Every OTP's
spent uses equal the certificates issued with it. Serials and fingerprints are
unique, every certificate has its enroll/success audit row, the audit hash chain
verifies (`kipuka audit verify`), and on SQLite `PRAGMA integrity_check` says ok.

A load generator stopped by the clock (wrk) may leave requests in flight: the server
commits them but the client never counts their 200. So certificates may exceed the
counted 200s by up to `in_flight` (the connections); estload drains its connections
and passes 0.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from deploy import Deployment


def engine_url(dep: Deployment) -> str:
    if dep.database_url:
        return dep.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"sqlite:///{dep.dir / 'kipuka.db'}"


def check_database(dep: Deployment, ok_responses: int, in_flight: int = 0) -> dict:
    listed = dep.kipuka("certs", "list", "--limit", "100000000")
    rows_cli = sum(1 for line in listed.splitlines() if line.strip())
    engine = create_engine(engine_url(dep))
    with engine.connect() as con:
        one = lambda q: con.execute(text(q)).one()  # noqa: E731
        certs = one("SELECT count(*) FROM certificates")[0]
        by_auth = {a: n for a, n in con.execute(text("SELECT auth, count(*) FROM certificates GROUP BY auth"))}
        by_ca = {a: n for a, n in con.execute(text("SELECT ca_id, count(*) FROM certificates GROUP BY ca_id"))}
        distinct = one("SELECT count(DISTINCT serial), count(DISTINCT fingerprint_sha256) FROM certificates")
        audit = {f"{e}/{o}": n for e, o, n in con.execute(text(
            "SELECT event, outcome, count(*) FROM audit GROUP BY event, outcome ORDER BY event, outcome"))}
        otps, spent = one("SELECT count(*), coalesce(sum(uses_total - uses_left), 0) FROM otps")
        # per OTP: uses spent = certificates that name it
        otp_mismatch = one("SELECT count(*) FROM otps o WHERE o.uses_total - o.uses_left <> "
                           "(SELECT count(*) FROM certificates c WHERE c.otp_id = o.id)")[0]
        integrity = one("PRAGMA integrity_check")[0] if engine.dialect.name == "sqlite" else "n/a (PostgreSQL)"
        size = (one("SELECT pg_database_size(current_database())")[0] if engine.dialect.name == "postgresql"
                else one("PRAGMA page_count")[0] * one("PRAGMA page_size")[0])
    engine.dispose()
    chain = dep.kipuka("audit", "verify", stderr=True)  # exits non-zero (and the run stops) on a broken chain
    enrolled = sum(n for k, n in audit.items() if k.endswith("/success") and k.split("/")[0] in ("enroll",
                                                                                              "reenroll"))
    redelivered = sum(n for k, n in audit.items() if k.endswith(".redeliver/success"))
    otp_certs = by_auth.get("otp", 0)
    surplus = certs + redelivered - ok_responses  # answered by the server, not counted by the client
    ok = (rows_cli == certs and enrolled == certs and distinct[0] == distinct[1] == certs
          and spent == otp_certs and otp_mismatch == 0 and 0 <= surplus <= in_flight
          and integrity in ("ok", "n/a (PostgreSQL)"))
    return {"database": engine.dialect.name, "ok_responses": ok_responses, "certificates_rows": certs,
            "certs_list_rows": rows_cli, "redelivered": redelivered, "unanswered_in_flight": surplus,
            "by_auth": by_auth, "by_ca": by_ca, "distinct_serials": distinct[0], "distinct_fingerprints": distinct[1],
            "audit": audit, "otps": otps, "otp_uses_spent": spent, "otps_spent_not_matching_certs": otp_mismatch,
            "integrity_check": integrity, "audit_chain": chain.strip() or "ok", "db_bytes": size,
            "files": {p.name: p.stat().st_size for p in Path(dep.dir).glob("kipuka.db*")}, "consistent": ok}


def describe(db: dict) -> str:
    state = "consistent" if db["consistent"] else "INCONSISTENT"
    return (f"{db['database']}: {db['certificates_rows']} certificates ({db['redelivered']} re-deliveries) for "
            f"{db['ok_responses']} counted 200s, {db['unanswered_in_flight']} in flight at the stop; OTP uses spent "
            f"{db['otp_uses_spent']} = OTP certificates {db['by_auth'].get('otp', 0)}; integrity "
            f"{db['integrity_check']}; {state}")
