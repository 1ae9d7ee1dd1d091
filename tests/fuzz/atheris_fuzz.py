"""Coverage-guided fuzzing of one parser target, by hand (not part of the test suite).

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.fuzz.atheris_fuzz csr -max_total_time=600 -timeout=5 [CORPUS_DIR]

Targets are in tests/fuzz/targets.py (body, csr, csrattrs, multipart, media-type,
authorization, proxy, client-body, server-key). Arguments after the target go to
libFuzzer: -max_total_time (seconds), -timeout (a single input slower than this
is reported as a hang), -max_len (input size, default 4096 here), -jobs/-workers,
and a corpus directory to keep what it learns between runs. A crash is an
exception the target does not expect; libFuzzer writes the input to crash-*.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["kipuka"]):
    from tests.fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_fuzz {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[argv[1]]
    args = [argv[0], *argv[2:]]
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=4096")
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
