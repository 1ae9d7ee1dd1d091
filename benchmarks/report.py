"""The runs of benchmarks/run.py as tables: every run, medians per configuration, and ratios.

This box is shared and noisy, so a figure is the median of --repeat runs, and a
comparison (this checkout against --compare REF, PostgreSQL against SQLite, two nodes
against one, PKCS#11 against software) is the ratio of medians measured in one
interleaved session.
"""

from __future__ import annotations

import statistics
from typing import Any

AXES = ("variant", "database", "layout", "ca", "cell")
FIGURES = ("rps", "p50_ms", "p99_ms", "max_ms", "server_cpu_ms_per_req", "db_cpu_ms_per_req", "client_cpu_pct",
           "other_cpu_pct")


def _key(run: dict) -> dict:
    return {"variant": run["variant"], "database": run["database"], "layout": f"{run['nodes']}x{run['workers']}",
            "ca": run["ca"], "cell": run["cell"]}


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per configuration: the median of every figure over its repetitions, and the rps range."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(_key(run).values()), []).append(run)
    rows = []
    for key, group in groups.items():
        results = [g["result"] for g in group]
        row: dict[str, Any] = dict(zip(AXES, key))
        row["code"] = group[0]["code"]
        row["runs"] = len(group)
        for f in FIGURES:
            row[f] = round(statistics.median(r.get(f, 0.0) for r in results), 3)
        row["rps_min"], row["rps_max"] = min(r["rps"] for r in results), max(r["rps"] for r in results)
        row["errors"] = sum(r["errors"] for r in results)
        row["consistent"] = all(r["database_check"]["consistent"] for r in results)
        rows.append(row)
    return rows


def ratios(summary: list[dict]) -> list[dict]:
    """For every axis with several values: median rps of each value over the first one (the reference),
    everything else equal. For the variant axis, A (this checkout) over B (--compare REF)."""
    out = []
    for axis in AXES[:-1]:
        values = list(dict.fromkeys(r[axis] for r in summary))
        if len(values) < 2:
            continue
        ref, others = (("B", ["A"]) if axis == "variant" else (values[0], values[1:]))
        index = {tuple(r[a] for a in AXES): r for r in summary}
        for r in summary:
            if r[axis] not in others:
                continue
            base = index.get(tuple(ref if a == axis else r[a] for a in AXES))
            if base and base["rps"]:
                out.append({"axis": axis, "of": r[axis], "over": ref,
                            "where": ", ".join(f"{a} {r[a]}" for a in AXES if a != axis),
                            "rps": r["rps"], "ref_rps": base["rps"], "ratio": round(r["rps"] / base["rps"], 3),
                            "p99_ms": r["p99_ms"], "ref_p99_ms": base["p99_ms"]})
    return out


def markdown(runs: list[dict], summary: list[dict], variants: list, info: dict) -> str:
    lines = [f"Machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, {info['python_ssl']}, "
             f"{info['wrk']}, kipuka {info['git']}."]
    for letter, code in zip("AB", variants):
        lines.append(f"{letter}: {code.name} at {code.rev} ({code.src})")
    lines += ["", "Medians per configuration (enrollments/s count 2xx answers; CPU in ms per request, "
              "other processes in % of one core):", "",
              "| variant | database | nodes x workers (0: per core) | CA | cell | runs | enrollments/s (min–max) | p50 ms | p99 ms "
              "| max ms | errors | server CPU | database CPU | load generator | other | database check |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary:
        lines.append(f"| {r['variant']} | {r['database']} | {r['layout']} | {r['ca']} | {r['cell']} | {r['runs']} | "
                     f"{r['rps']:,.0f} ({r['rps_min']:,.0f}–{r['rps_max']:,.0f}) | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['errors']} | {r['server_cpu_ms_per_req']:.2f} | "
                     f"{r['db_cpu_ms_per_req']:.2f} | {r['client_cpu_pct']:.0f}% | {r['other_cpu_pct']:.0f}% | "
                     f"{'ok' if r['consistent'] else 'INCONSISTENT'} |")
    rat = ratios(summary)
    if rat:
        lines += ["", "Ratios of medians (enrollments/s):", "", "| what | where | enrollments/s | reference | ratio "
                  "| p99 ms (reference) |", "|---|---|---:|---:|---:|---:|"]
        for r in rat:
            lines.append(f"| {r['axis']} {r['of']} / {r['over']} | {r['where']} | {r['rps']:,.0f} | "
                         f"{r['ref_rps']:,.0f} | {r['ratio']:.2f} | {r['p99_ms']:.1f} ({r['ref_p99_ms']:.1f}) |")
    lines += ["", "Every run:", "",
              "| run | enrollments/s | p99 ms | errors | server CPU ms/req | other | certificates |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        r = run["result"]
        errs = "0" if not r["errors"] else ", ".join(f"{k}={v}" for k, v in r["error_detail"].items())
        lines.append(f"| {run['variant']} {run['database']} {run['nodes']}x{run['workers']} {run['ca']} {run['cell']} "
                     f"#{run['repeat']} | {r['rps']:,.0f} | {r['p99_ms']:.1f} | {errs} | "
                     f"{r['server_cpu_ms_per_req']:.2f} | {r['other_cpu_pct']:.0f}% | "
                     f"{r['database_check']['certificates_rows']} |")
    profiled = [(run, view, p) for run in runs for view, p in run["result"].get("profiles", {}).items()]
    if profiled:
        lines += ["", "Profiles (one worker; own time by area, the full summaries in profile-*.summary.txt):", ""]
        for run, view, p in profiled:
            areas = ", ".join(f"{a['area']} {a['pct']:.0f}%" for a in p["summary"]["areas"][:6])
            lines.append(f"- {run['database']} {run['nodes']}x{run['workers']} {run['ca']} {run['cell']}, {view}: "
                         f"{areas} ({p['raw']})")
    return "\n".join(lines) + "\n"
