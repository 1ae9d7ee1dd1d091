"""Enrollments/s with one node and with two nodes on one database: a shortcut into run.py.

    .venv/bin/python benchmarks/cluster.py [run.py options, e.g. --repeat 3 --duration 10]

is run.py with these defaults (each can be given again to override it):

    --cells otp:32,keepalive:32 --database sqlite,postgresql --nodes 1x2,2x1

that is, for the OTP bootstrap (wrk) and mTLS (estload), keep-alive, 32 connections in
total (split evenly over the nodes): one node with two workers against two nodes with
one worker each, on SQLite and on a fresh PostgreSQL database
(postgresql://127.0.0.1:5432/test; --database postgresql=URL for another server).
The report's "layout 2x1 / 1x2" rows are the two-node ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py)

DEFAULTS = ["--cells", "otp:32,keepalive:32", "--database", "sqlite,postgresql", "--nodes", "1x2,2x1"]

if __name__ == "__main__":
    sys.exit(run.main(DEFAULTS + sys.argv[1:]))
