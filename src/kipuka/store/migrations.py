"""Versioned schema migrations: an ordered list of steps and a version row.

Hand-rolled rather than Alembic: kipuka must migrate itself at start-up from a
wheel, with no script directory or env.py, and the steps are few. Each step runs
in the same transaction as the version bump, so a failed step leaves the
database at the previous version.

Version 1 is the baseline and creates the tables of schema.py as they stood at
version 1. Before changing schema.py, freeze version 1 into explicit DDL and
add the change as a new step.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import Connection, inspect, select

from kipuka.store import schema


def _v1_baseline(conn: Connection) -> None:
    schema.metadata.create_all(conn)


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "baseline: certificates, otps, otp_failures, audit", _v1_baseline),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    row = conn.execute(select(schema.schema_version.c.version)).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> list[int]:
    """Apply every pending step; returns the versions applied."""
    version = current_version(conn)
    applied = []
    for number, _, step in MIGRATIONS:
        if number <= version:
            continue
        step(conn)
        if version == 0:
            conn.execute(schema.schema_version.insert().values(version=number))
        else:
            conn.execute(schema.schema_version.update().values(version=number))
        version = number
        applied.append(number)
    return applied
