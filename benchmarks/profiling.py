"""py-spy profiles of one worker under load, summarised by benchmarks/profile_summary.py.

Two views per mode, each from its own load run:
  gil      `--gil --threads`: only samples of the thread holding the GIL, i.e. where the worker's Python
           CPU goes (idle waits and threads blocked on the database drop out);
  threads  `--threads` (all threads, idle ones left out by py-spy): where time is spent waiting,
           e.g. the event loop against the database writer thread.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from machine import log
from profile_summary import summarize

VIEWS = {"gil": ["--gil", "--threads"], "threads": ["--threads"]}


def pyspy() -> str:
    """py-spy of this venv (installed with pip if missing), else one on PATH, else ""."""
    local = Path(sys.executable).parent / "py-spy"
    if not local.exists() and not shutil.which("py-spy"):
        log("installing py-spy into this Python environment (pip install py-spy)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    return str(local) if local.exists() else (shutil.which("py-spy") or "")


def profile(pid: int, start_load: Callable[[float], subprocess.Popen], seconds: float, out: Path, name: str,
            views: tuple[str, ...] = ("gil", "threads")) -> dict:
    """For each view: start a load run of seconds + 3 s, sample `pid` for `seconds` after 1.5 s.

    `start_load(duration)` starts the load generator and returns its process (stdout piped).
    Returns {view: {"raw", "svg", "summary", "load_output"}}."""
    tool = pyspy()
    if not tool:
        log("py-spy is not available; no profile (pip install py-spy)")
        return {}
    found: dict = {}
    for view in views:
        raw, svg = out / f"profile-{name}-{view}.txt", out / f"profile-{name}-{view}.svg"
        log(f"profiling worker {pid}: {name}, {view} view, {seconds:g} s")
        load = start_load(seconds + 3)
        time.sleep(1.5)
        spy = subprocess.run([tool, "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)),
                              "--nonblocking", *VIEWS[view], "--format", "raw", "-o", str(raw)],
                             capture_output=True, text=True)
        stdout, _ = load.communicate(timeout=seconds + 300)
        (out / f"profile-{name}-{view}.load.txt").write_text(stdout or "")
        if spy.returncode != 0 or not raw.exists():
            log(f"py-spy failed: {spy.stderr.strip()[-500:]}")
            continue
        _flamegraph(raw, svg)
        summary = summarize(raw, top=25)
        (out / f"profile-{name}-{view}.summary.txt").write_text(summary["text"])
        print(summary["text"], flush=True)
        found[view] = {"raw": raw.name, "svg": svg.name if svg.exists() else None, "summary": summary,
                       "load_output": (stdout or "")[-2000:]}
    return found


def _flamegraph(raw: Path, svg: Path) -> None:
    """An SVG flame graph from py-spy's collapsed stacks, if flamegraph.pl (Debian: flamegraph) is there."""
    tool = shutil.which("flamegraph.pl") or shutil.which("flamegraph")
    if not tool:
        return
    with open(svg, "wb") as fh:
        subprocess.run([tool, str(raw)], stdout=fh, stderr=subprocess.DEVNULL)
