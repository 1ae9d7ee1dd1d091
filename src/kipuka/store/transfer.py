"""`kipuka migrate-store`: copy every record from one database to another (SQLite to PostgreSQL).

Rows keep their ids, so the audit chain and every cross-reference stay intact;
the target's id sequences are moved past the copied rows afterwards.
"""

from __future__ import annotations

from sqlalchemy import func, select, text

from kipuka.store import schema
from kipuka.store.sql import Store

BATCH = 2000


def copy_store(source_url: str, target_url: str, *, force: bool = False) -> dict[str, int]:
    source, target = Store(source_url), Store(target_url)
    try:
        source.migrate()
        target.migrate()
        copied: dict[str, int] = {}
        with source._read() as src, target._tx() as dst:
            for table in schema.metadata.sorted_tables:
                if table is schema.schema_version:
                    continue
                if not force and dst.execute(select(func.count()).select_from(table)).scalar_one():
                    raise ValueError(f"target table {table.name} is not empty (use --force to add to it)")
                count = 0
                result = src.execute(select(table))
                while rows := result.fetchmany(BATCH):
                    dst.execute(table.insert(), [dict(r._mapping) for r in rows])
                    count += len(rows)
                copied[table.name] = count
                if dst.dialect.name == "postgresql" and "id" in table.c and table.c.id.autoincrement:
                    dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                     f"GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table.name}), 1))"))
        return copied
    finally:
        source.close()
        target.close()
