#!/usr/bin/env python3
"""Summarise py-spy collapsed stacks (`py-spy record --format raw [--threads]`).

    python benchmarks/profile_summary.py profile.txt [--top 25]

Own time: samples whose innermost frame is the function. Total time: samples
with the function anywhere on the stack (counted once per sample). Functions
are keyed by name and file, lines ignored. Also: samples per thread, and own
time grouped by area (TLS, asyncio/uvloop, aiohttp, SQLAlchemy, sqlite3,
cryptography, kipuka, ...).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")
AREAS = [  # first match wins; matched against the file of the innermost (own-time) frame
    ("kipuka", ("kipuka/",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("sqlite3 driver", ("sqlite3/",)),
    ("psycopg (PostgreSQL driver)", ("psycopg/", "psycopg_pool/", "psycopg_binary/")),
    ("python-pkcs11", ("pkcs11/",)),
    ("cryptography (x509, ECDSA)", ("cryptography/",)),
    ("aiohttp", ("aiohttp/",)),
    ("multidict/yarl", ("multidict/", "yarl/")),
    ("uvloop loop (C: sockets, callbacks, parser)", ("uvloop/", "asyncio/runners.py")),
    ("ssl (TLS records, handshakes)", ("ssl.py",)),
    ("asyncio", ("asyncio/",)),
    ("thread pool hand-off", ("concurrent/", "threading.py", "queue.py")),
    ("dataclasses/copy", ("dataclasses.py", "copy.py")),
    ("pyasn1", ("pyasn1",)),
]


# Entry frames that are on (nearly) every stack of their thread: left out of the total-time table.
PLUMBING = ("threading.py", "concurrent/futures/thread.py", "<frozen runpy>", "kipuka/__main__.py",
            "kipuka/cli/main.py", "kipuka/server/supervisor.py", "uvloop/__init__.py", "asyncio/runners.py")


def short(file: str) -> str:
    for marker in ("/site-packages/", "/src/"):
        if marker in file:
            return file.split(marker, 1)[1]
    if "/lib/python3." in file:
        return file.split("/lib/python3.", 1)[1].split("/", 1)[-1]
    return file


def parse(path: Path) -> list[tuple[str | None, list[tuple[str, str]], int]]:
    stacks = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = None
        # --threads puts "thread (TID): NAME" first; --subprocesses adds "process PID:..."
        while frames and frames[0].startswith(("thread (", "process ")):
            head = frames.pop(0)
            if head.startswith("thread ("):
                thread = head.split(": ", 1)[1] if ": " in head else head
        parsed = []
        for f in frames:
            m = FRAME.match(f)
            parsed.append((m.group("func"), m.group("file")) if m else (f, ""))
        stacks.append((thread, parsed, int(count)))
    return stacks


def area(file: str) -> str:
    for name, markers in AREAS:
        if any(m in file for m in markers):
            return name
    if file.endswith((".so", ".so.3")) or ".so." in file:
        return "native: " + Path(file).name.split(".so")[0]
    return "other (" + file.split("/")[0] + ")" if file else "native/unknown"


def summarize(path: Path, top: int = 25) -> dict:
    stacks = parse(path)
    total = sum(c for _, _, c in stacks) or 1
    own: Counter = Counter()
    incl: Counter = Counter()
    threads: Counter = Counter()
    areas: Counter = Counter()
    for thread, frames, count in stacks:
        threads[thread or "?"] += count
        if not frames:
            continue
        func, file = frames[-1]
        own[(func, file)] += count
        areas[area(file)] += count
        for key in set(frames):
            if not key[1].endswith(PLUMBING):
                incl[key] += count

    def rows(counter: Counter) -> list[dict]:
        return [{"function": f, "file": short(fl), "samples": n, "pct": round(100 * n / total, 1)}
                for (f, fl), n in counter.most_common(top)]

    own_rows, incl_rows = rows(own), rows(incl)
    area_rows = [{"area": a, "samples": n, "pct": round(100 * n / total, 1)} for a, n in areas.most_common()]
    thread_rows = [{"thread": t, "samples": n, "pct": round(100 * n / total, 1)} for t, n in threads.most_common()]
    text = [f"py-spy profile {path.name}: {total} samples (non-idle)", "", "samples by thread:"]
    text += [f"  {r['pct']:5.1f}%  {r['thread']}" for r in thread_rows]
    text += ["", "own time by area:"]
    text += [f"  {r['pct']:5.1f}%  {r['area']}" for r in area_rows]
    text += ["", f"top {top} by own time:"]
    text += [f"  {r['pct']:5.1f}%  {r['function']}  ({r['file']})" for r in own_rows]
    text += ["", f"top {top} by total time (thread and process entry frames left out):"]
    text += [f"  {r['pct']:5.1f}%  {r['function']}  ({r['file']})" for r in incl_rows]
    return {"samples": total, "own": own_rows, "total": incl_rows, "areas": area_rows, "threads": thread_rows,
            "text": "\n".join(text) + "\n"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    print(summarize(a.profile, a.top)["text"], end="")
