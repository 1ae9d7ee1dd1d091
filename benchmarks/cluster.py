"""Enrollments/s on SQLite versus PostgreSQL, with one node and with two nodes.

Reuses run.py's deployment, device enrollment and C load generator. Each case
runs simpleenroll over mTLS, keep-alive, 32 clients in total (split evenly over
the nodes), for --duration seconds, and prints req/s, p50 and p99:

  sqlite, 1 node x 2 workers     the embedded default
  postgresql, 1 node x 2 workers the same node on the shared database
  postgresql, 2 nodes x 1 worker two kipuka processes sharing one database

Usage: .venv/bin/python benchmarks/cluster.py [--duration 10] [--database postgresql://127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (benchmarks/run.py)


def _database(admin_url: str) -> str:
    import psycopg
    name = f"kipuka_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


class Node(run.Server):
    """A node of a deployment; the first one creates it, the others share its folder."""

    def __init__(self, root: Path, workers: int, database: str | None, first: "Node | None" = None) -> None:
        if first is None:
            super().__init__(root, workers)
            if database:
                text = re.sub(r'^url = "[^"]*".*$', f'url = "{database}"', self.config.read_text(), flags=re.M)
                self.config.write_text(text)
        else:
            self.dir, self.config = first.dir, first.config
            self.port, self.proc = run.free_port(), None
            self.log = self.dir / f"serve-{self.port}.log"


def loadgen(node: Node, manifest: Path, ca: Path, clients: int, duration: float) -> dict:
    cmd = [str(run.LOADGEN), "-a", "127.0.0.1", "-p", str(node.port), "-i", str(manifest), "-m", "keepalive",
           "-c", str(clients), "-t", "1", "-d", str(duration), "-w", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"estload failed: {proc.stdout}\n{proc.stderr}")
    return json.loads(line[len("RESULT "):])


def case(name: str, database: str | None, nodes: int, workers: int, clients: int, duration: float,
         devices: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="kipuka-cluster-"))
    first = Node(root, workers, database)
    group = [first] + [Node(root, workers, database, first) for _ in range(nodes - 1)]
    try:
        for node in group:
            node.start()
        ca = first.dir / "ca" / "root.pem"
        manifest = run.enroll_devices(first, root / "devices", devices, ca)
        with futures.ThreadPoolExecutor(nodes) as pool:
            results = list(pool.map(lambda n: loadgen(n, manifest, ca, clients // nodes, duration), group))
    finally:
        for node in group:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
    rps = sum(r["rps"] for r in results)
    return {"case": name, "req_s": round(rps, 1), "p50_ms": max(r["p50_ms"] for r in results),
            "p99_ms": max(r["p99_ms"] for r in results), "errors": sum(r.get("errors", 0) for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    args = ap.parse_args()
    run.build_loadgen()
    rows = [case("sqlite, 1 node x 2 workers", None, 1, 2, args.clients, args.duration, args.devices),
            case("postgresql, 1 node x 2 workers", _database(args.database), 1, 2, args.clients, args.duration,
                 args.devices),
            case("postgresql, 2 nodes x 1 worker", _database(args.database), 2, 1, args.clients, args.duration,
                 args.devices)]
    print("\n| case | enrollments/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['req_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")


if __name__ == "__main__":
    main()
