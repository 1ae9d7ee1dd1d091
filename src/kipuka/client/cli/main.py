"""`kipuka-est`: parser assembly, dispatch, errors and exit codes (docs/client.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from kipuka import __version__
from kipuka.client import exitcodes
from kipuka.client.cli import commands, renew
from kipuka.client.cli.options import PROG, Output, epilog
from kipuka.client.errors import EstError, HttpError

DESCRIPTION = """EST (RFC 7030) client of kipuka: enroll, renew, and keep certificates fresh.

  kipuka-est cacerts -s URL --fingerprint SHA256 --out ca.pem     # first contact
  kipuka-est enroll -s URL --trust ca.pem -u ID --otp-file F --cn NAME --out-cert C --out-key K
  kipuka-est renew -s URL --trust ca.pem --cert C --key K --if-expiring-within 33%
  kipuka-est agent -c /etc/kipuka-est/agent.toml                  # renews by itself

Files are written atomically (temporary file, fsync, rename), keys with mode 0600.
Progress and errors are one line each on stderr; --json prints one JSON object on
stdout (errors too: {"ok": false, "error": ..., "reason": ...}). Each command has
its own --help with examples."""


def parser() -> argparse.ArgumentParser:
    from kipuka.client.agent import certmonger, command as agent_command

    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    renew.register(sub)
    agent_command.register(sub)
    certmonger.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Output(getattr(args, "json", False), getattr(args, "quiet", False))
    try:
        return args.func(args, out)
    except EstError as exc:
        return fail(out, exc)
    except KeyboardInterrupt:
        out.progress("interrupted")
        return 130
    except BrokenPipeError:
        return broken_pipe()


def fail(out: Output, exc: EstError) -> int:
    status = getattr(exc, "status", None)
    line = f"{PROG}: error: {status}: {exc.reason}" if isinstance(exc, HttpError) else f"{PROG}: error: {exc.reason}"
    retry = getattr(exc, "retry_after", None)
    if retry:
        line += f" (retry after {retry} s)"
    print(line, file=sys.stderr, flush=True)
    if out.json_mode:
        doc = {"ok": False, "error": type(exc).__name__, "reason": exc.reason}
        if status:
            doc["status"] = status
        if retry:
            doc["retry_after"] = retry
        print(json.dumps(doc, sort_keys=True), flush=True)
    return exitcodes.for_error(exc)


def broken_pipe() -> int:
    """stdout was closed by its reader (`| head`): stop quietly, as a command killed by SIGPIPE would.

    stdout is pointed at /dev/null so that the interpreter's final flush does not fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return exitcodes.BROKEN_PIPE


def run() -> None:
    """The console script: main(), with a closed stdout caught even while the result is printed."""
    try:
        code = main()
    except BrokenPipeError:
        code = broken_pipe()
    sys.exit(code)
