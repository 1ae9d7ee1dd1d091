"""Compile and run the Java programs of the tests against Debian's Bouncy Castle jars.

Bouncy Castle (Debian libbcpkix-java: bcprov, bcpkix, bcutil under /usr/share/java)
is the independent EST and CMS implementation the tests check kipuka against. Every
test module that needs it calls `compile_or_skip` once (module scope): a missing JDK
or missing jars skip the module with the reason and the package to install.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

BC_JARS = [Path("/usr/share/java") / j for j in ("bcprov.jar", "bcpkix.jar", "bcutil.jar")]
CLASSPATH = ":".join(str(j) for j in BC_JARS)


def unavailable() -> str | None:
    """Why Java programs cannot run here, or None when they can."""
    missing = [str(j) for j in BC_JARS if not j.exists()]
    if missing:
        return f"Bouncy Castle jars absent ({', '.join(missing)}); apt-get install libbcpkix-java"
    if not (shutil.which("javac") and shutil.which("java")):
        return "no JDK (javac/java) on PATH; apt-get install default-jdk-headless"
    return None


@dataclass(frozen=True)
class Java:
    """Compiled classes in `classes`, run one JVM per call."""

    classes: Path

    def run(self, main: str, *args: str, timeout: float = 300) -> str:
        """stdout of `java main args`; a non-zero exit fails the test with Java's output."""
        proc = self.call(main, *args, timeout=timeout)
        assert proc.returncode == 0, f"java {main} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def call(self, main: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        # -XX:TieredStopAtLevel=1 and -Xshare:auto: a short-lived JVM starts and runs
        # measurably faster with only the C1 compiler.
        return subprocess.run(["java", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp", f"{CLASSPATH}:{self.classes}",
                               main, *args], capture_output=True, text=True, timeout=timeout)


def compile_java(classes: Path, sources: dict[str, str] | None = None, files: list[Path] = ()) -> Java:
    """javac the given sources ({class name: source text}) and files into `classes`."""
    classes.mkdir(parents=True, exist_ok=True)
    paths = [str(f) for f in files]
    for name, text in (sources or {}).items():
        path = classes / f"{name}.java"
        path.write_text(text)
        paths.append(str(path))
    proc = subprocess.run(["javac", "-nowarn", "-cp", CLASSPATH, "-d", str(classes), *paths],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"javac failed:\n{proc.stderr}"
    return Java(classes)


def compile_or_skip(classes: Path, sources: dict[str, str] | None = None, files: list[Path] = ()) -> Java:
    """compile_java, or skip the calling test (module) saying what is missing."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    return compile_java(classes, sources, files)
