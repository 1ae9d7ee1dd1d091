"""The agent's passes: one (`--once`, for timers) or for ever (a service).

A pass looks at every certificate (kipuka.client.agent.runner), then writes
the status. The long-running mode sleeps until the earliest time any entry
wants looking at (its renewal time, its back-off, the server's Retry-After),
but never longer than `check_interval`, so that a suspended machine, a
changed clock or a new OTP dropped into place are noticed. SIGTERM and
SIGINT stop it between two steps (a write in progress completes: they are
journaled anyway); SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import sys
import threading
from typing import Callable

from kipuka.client import exitcodes
from kipuka.client.agent import config as agent_config
from kipuka.client.agent import status
from kipuka.client.agent.config import AgentConfig
from kipuka.client.agent.runner import ENROLLED, FAILED, PENDING, RENEWED, WAITING, Result, Runner
from kipuka.client.agent.state import StateDir
from kipuka.client.errors import EstError

Log = Callable[[str], None]


def one_pass(config: AgentConfig, states: StateDir, log: Log, force: bool = False,
             only: str | None = None) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for cfg in config.certificates:
        if only is not None and cfg.name != only:
            continue
        try:
            results[cfg.name] = Runner(cfg, states, log).run(force=force)
        except (EstError, OSError) as exc:  # e.g. an unwritable state directory: the other entries go on
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            log(f"[{cfg.name}] failed: {reason}")
            results[cfg.name] = Result(cfg.name, FAILED, exitcodes.ERROR, reason, None, None)
    try:
        status.write(config, status.entries(config, states, results))
    except (OSError, EstError) as exc:
        log(f"cannot write the status: {getattr(exc, 'reason', None) or exc}")
    return results


def exit_code(results: dict[str, Result]) -> int:
    """One code for a pass: a failure wins, then pending, then renewed, else not due."""
    failed = {r.exit_code for r in results.values() if r.action == FAILED
              or (r.action == WAITING and r.exit_code != exitcodes.PENDING)}
    if failed:
        return failed.pop() if len(failed) == 1 else exitcodes.ERROR
    if any(r.action in (PENDING, WAITING) for r in results.values()):
        return exitcodes.PENDING
    if any(r.action in (ENROLLED, RENEWED) for r in results.values()):
        return exitcodes.OK
    return exitcodes.NOT_DUE


def run_forever(path: str, log: Log) -> int:
    stop, reload, wake = threading.Event(), threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), wake.set()))
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), wake.set()))
    signal.signal(signal.SIGHUP, lambda *_: (reload.set(), wake.set()))
    config = agent_config.load(path)
    states = _open_states(config)
    log(f"agent started: {len(config.certificates)} certificate(s), state in {config.state_dir}")
    try:
        while not stop.is_set():
            if reload.is_set():
                reload.clear()
                config = _reloaded(path, config, log)
            results = one_pass(config, states, log)
            now = dt.datetime.now(dt.timezone.utc)
            wakes = [r.next_time for r in results.values() if r.next_time is not None]
            delay = config.check_interval
            if wakes:
                delay = min(delay, max(1.0, (min(wakes) - now).total_seconds()))
            wake.wait(delay)
            wake.clear()
    finally:
        states.unlock()
    log("agent stopped")
    return exitcodes.OK


def _reloaded(path: str, config: AgentConfig, log: Log) -> AgentConfig:
    try:
        new = agent_config.load(path)
    except EstError as exc:
        log(f"configuration not reloaded: {exc.reason}")
        return config
    if new.state_dir != config.state_dir:
        log("state_dir changed: restart the agent to move it; keeping the old one")
        new = dataclasses.replace(new, state_dir=config.state_dir)
    log(f"configuration reloaded: {len(new.certificates)} certificate(s)")
    return new


def run_once(path: str, log: Log, force: bool = False, only: str | None = None) -> tuple[int, dict[str, Result],
                                                                                          AgentConfig, StateDir]:
    config = agent_config.load(path)
    if only is not None:
        config.certificate(only)
    states = _open_states(config)
    try:
        results = one_pass(config, states, log, force=force, only=only)
    finally:
        states.unlock()
    return exit_code(results), results, config, states


def _open_states(config: AgentConfig) -> StateDir:
    states = StateDir(config.state_dir)
    states.ensure()
    states.lock()
    return states


def stderr_log(message: str) -> None:
    print(f"kipuka-est agent: {' '.join(message.split())}", file=sys.stderr, flush=True)
