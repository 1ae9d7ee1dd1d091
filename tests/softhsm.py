"""SoftHSM2 tokens for the PKCS#11 tests: each test gets a token directory of its own.

SOFTHSM2_CONF is set in os.environ (with monkeypatch), so every `kipuka` process a
test starts (Server.start, run_cli) inherits it and sees only that test's tokens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
PIN, SO_PIN = "4711-test-pin", "0815-so-pin"
PIN_ENV = "KIPUKA_HSM_PIN"


def module_path() -> str:
    for path in MODULE_CANDIDATES:
        if os.path.exists(path):
            return path
    pytest.skip("SoftHSM2 is not installed (scripts/test.sh installs Debian softhsm2 and opensc)")


class SoftHSM:
    def __init__(self, root: Path) -> None:
        self.module = module_path()
        if shutil.which("softhsm2-util") is None:
            pytest.skip("softhsm2-util is not installed")
        self.root = root
        self.tokendir = root / "tokens"
        self.tokendir.mkdir(parents=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.tokendir}\nobjectstore.backend = file\n"
                             "log.level = ERROR\nslots.removable = false\n")
        self.dirs: dict[str, Path] = {}

    def init_token(self, label: str) -> Path:
        """A fresh token; returns its directory inside the token dir."""
        before = set(self.tokendir.iterdir())
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
                        "--so-pin", SO_PIN], check=True, capture_output=True, env=os.environ.copy())
        (new,) = set(self.tokendir.iterdir()) - before
        self.dirs[label] = new
        return new

    def import_key(self, label: str, key, key_label: str, key_id: str = "c0ffee") -> None:
        """Put a software key into a token with OpenSC's pkcs11-tool (for replicas holding one key)."""
        if shutil.which("pkcs11-tool") is None:
            pytest.skip("pkcs11-tool (Debian opensc) is not installed")
        der = self.root / f"{key_label}-{label}.der"
        der.write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        try:
            subprocess.run(["pkcs11-tool", "--module", self.module, "--token-label", label, "--login", "--pin", PIN,
                            "--write-object", str(der), "--type", "privkey", "--label", key_label, "--id", key_id,
                            "--usage-sign"], check=True, capture_output=True, env=os.environ.copy())
        finally:
            der.unlink()

    def objects(self, label: str) -> str:
        return subprocess.run(["pkcs11-tool", "--module", self.module, "--token-label", label, "--login", "--pin",
                               PIN, "--list-objects"], check=True, capture_output=True, text=True,
                              env=os.environ.copy()).stdout

    def remove(self, label: str) -> Path:
        """Take the token away: copy its directory aside, then delete the token."""
        backup = self.root / f"backup-{label}"
        shutil.copytree(self.dirs[label], backup)
        # softhsm2-util can fail while a server process is writing the token's files under load;
        # after a few tries the token directory is moved away instead (the same loss to the server).
        for attempt in range(3):
            done = subprocess.run(["softhsm2-util", "--delete-token", "--token", label], capture_output=True,
                                  text=True, env=os.environ.copy())
            if done.returncode == 0 or not self.dirs[label].exists():
                break
            time.sleep(0.2 * (attempt + 1))
        if self.dirs[label].exists():
            shutil.move(str(self.dirs[label]), str(self.root / f"gone-{label}-{time.monotonic_ns()}"))
        assert not self.dirs[label].exists()
        return backup

    def restore(self, label: str) -> None:
        backup = self.root / f"backup-{label}"
        shutil.copytree(backup, self.dirs[label])
        shutil.rmtree(backup)


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHSM:
    hsm = SoftHSM(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.conf))
    monkeypatch.setenv(PIN_ENV, PIN)
    return hsm
