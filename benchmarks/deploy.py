"""The deployment under test: `kipuka init` as an operator runs it, plus `workers`, on loopback.

What can vary between runs, each a small value object:
  Code      which kipuka runs (this checkout's src/, another worktree's, or a git ref exported
            to a temporary folder), put first on PYTHONPATH of every kipuka process;
  Database  SQLite (the file `kipuka init` configures) or a fresh PostgreSQL database;
  SoftHSM   a token directory for `kipuka init --hsm` (the iot-fleet CA's key in the token).
A Deployment is one `kipuka init` folder served by one or more nodes (`kipuka serve`
processes sharing the folder and the database, each on its own port).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from machine import REPO, foreign_listeners, git, log

PY = sys.executable
KIPUKA = [PY, "-m", "kipuka"]
EST = "/.well-known/est"
DEFAULT_POSTGRES = "postgresql://127.0.0.1:5432/test"
HSM_PIN = "bench-pin-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- what runs --------------------------------------------------------------------------

@dataclass(frozen=True)
class Code:
    """A kipuka source tree: `src` goes first on PYTHONPATH, so it wins over the venv's install."""
    name: str
    src: Path
    rev: str
    pycache: Path | None = None  # another checkout's tree gets no __pycache__ of ours

    def env(self) -> dict[str, str]:
        extra = {"PYTHONPYCACHEPREFIX": str(self.pycache)} if self.pycache else {}
        return {"PYTHONPATH": str(self.src), **extra}

    @classmethod
    def current(cls) -> "Code":
        dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
        return cls("this checkout", REPO / "src", git("rev-parse", "--short", "HEAD") + dirty)

    @classmethod
    def resolve(cls, ref: str, scratch: Path) -> "Code":
        """A worktree or checkout folder (its src/), or a git ref of this repository.

        A ref is exported with `git archive` into `scratch` (no worktree is registered,
        so the repository's metadata is left alone); the caller removes `scratch`."""
        path = Path(ref).expanduser()
        if path.is_dir():
            src = path / "src" if (path / "src" / "kipuka").is_dir() else path
            if not (src / "kipuka" / "__init__.py").exists():
                sys.exit(f"--compare {ref}: no src/kipuka in that folder")
            return cls(ref, src.resolve(), git("rev-parse", "--short", "HEAD", repo=path) or "?", scratch / "pycache")
        sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if not sha:
            sys.exit(f"--compare {ref}: neither a folder nor a git ref of {REPO}")
        dest = scratch / f"ref-{sha[:10]}"
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha, "src"], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            sys.exit(f"git archive {ref} failed")
        return cls(ref, dest / "src", sha[:7])


    def verify(self) -> None:
        """Exit unless `python -m kipuka` with this PYTHONPATH really imports from `src`."""
        r = subprocess.run([PY, "-c", "import kipuka; print(kipuka.__file__)"], capture_output=True, text=True,
                           env={**os.environ, **self.env()}, cwd=tempfile.gettempdir())
        if not r.stdout.strip().startswith(str(self.src)):
            sys.exit(f"{self.name}: kipuka imports from {r.stdout.strip() or r.stderr[-300:]}, not from {self.src}")


@dataclass(frozen=True)
class Database:
    """`sqlite`, or `postgresql[=URL]`: each deployment gets a fresh database on that server."""
    kind: str
    admin_url: str = ""

    @classmethod
    def parse(cls, spec: str) -> "Database":
        kind, _, url = spec.partition("=")
        if kind == "sqlite" and not url:
            return cls("sqlite")
        if kind in ("postgresql", "postgres"):
            return cls("postgresql", url or DEFAULT_POSTGRES)
        sys.exit(f"--database {spec}: expected sqlite or postgresql[=URL]")

    def create(self) -> str | None:
        """A new empty database's URL (PostgreSQL), or None for the SQLite file of `kipuka init`."""
        if self.kind == "sqlite":
            return None
        import psycopg
        name = f"kipuka_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def drop(self, url: str | None) -> None:
        if not url:
            return
        import psycopg
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def backend_pids(url: str | None) -> list[int]:
    """PIDs of the PostgreSQL backends serving `url`'s database (its CPU is the server's too)."""
    if not url:
        return []
    import psycopg
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()").fetchall()
    except psycopg.Error:
        return []
    return [r[0] for r in rows]


class SoftHSM:
    """A SoftHSM2 token directory of its own, token `kipuka`, for `kipuka init --hsm`."""

    def __init__(self, root: Path) -> None:
        if not shutil.which("softhsm2-util"):
            sys.exit("--ca pkcs11 needs SoftHSM2 (apt-get install softhsm2)")
        tokens = root / "tokens"
        tokens.mkdir(parents=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                             "slots.removable = false\n")
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kipuka", "--pin", HSM_PIN,
                        "--so-pin", "5678"], check=True, capture_output=True, env=self.env())

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "KIPUKA_HSM_PIN": HSM_PIN}


# --- the deployment ---------------------------------------------------------------------

@dataclass
class Node:
    """One `kipuka serve` process (with its workers) on its own EST port."""
    config: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    def workers(self) -> list[int]:
        """PIDs of the worker processes (the serve process itself with workers = 1)."""
        if self.proc is None:
            return []
        kids: list[int] = []
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                try:
                    kids += [int(p) for p in (task / "children").read_text().split()]
                except OSError:
                    pass
        except OSError:
            return []
        return kids or [self.proc.pid]


class Deployment:
    """`kipuka init DIR` with free loopback ports, `[server] workers` set, and the chosen database.

    Nothing else of the generated configuration changes, so what is measured is what
    an operator gets. Extra nodes (nodes > 1) get a copy of kipuka.toml whose admin
    and CRL/OCSP listeners are on other free ports; they share everything else.
    Keeps the attributes of the former run.Server (dir, config, port, log, start,
    workers, stop) for ra_chain.py."""

    def __init__(self, root: Path, workers: int = 0, *, code: Code | None = None, database_url: str | None = None,
                 hsm: SoftHSM | None = None, nodes: int = 1) -> None:
        self.code = code or Code.current()
        self.hsm = hsm
        self.database_url = database_url
        self.dir = root / "server"
        self.admin_port = free_port()
        extra = ["--hsm", "--hsm-token", "kipuka"] if hsm else []
        # The EST port is given to `kipuka serve --listen`; the other listeners get free ports here.
        self.cli("init", str(self.dir), "--admin-listen",
                 f"127.0.0.1:{self.admin_port}", "--revocation-listen", f"127.0.0.1:{free_port()}", *extra)
        self.config = self.dir / "kipuka.toml"
        text = self.config.read_text()
        text, n = re.subn(r"^workers = 1\b", f"workers = {workers}", text, flags=re.M)
        if n != 1:
            sys.exit("could not find the `workers = 1` line in the generated kipuka.toml")
        if database_url:
            text, n = re.subn(r'^url = "sqlite:///kipuka.db"', f'url = "{database_url}"', text, flags=re.M)
            if n != 1:
                sys.exit("could not find the SQLite url line in the generated kipuka.toml")
        self.config.write_text(text)
        self.nodes = [Node(self.config, free_port(), self.dir / "serve.log")]
        for i in range(1, nodes):
            name = f"node{i + 1}"
            self.nodes.append(Node(self.dir / f"kipuka-{name}.toml", free_port(), self.dir / f"serve-{name}.log"))
        self._token = ""

    # the node-1 view, as the former run.Server had it
    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def log(self) -> Path:
        return self.nodes[0].log

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.nodes[0].proc

    @property
    def ca_file(self) -> Path:
        """The root the EST and admin TLS certificates chain to."""
        return self.dir / "ca" / "root.pem"

    def env(self) -> dict[str, str]:
        base = self.hsm.env() if self.hsm else dict(os.environ)
        return {**base, **self.code.env()}

    def cli(self, *args: str, stderr: bool = False) -> str:
        """Run `kipuka ARGS` with this deployment's code; its stdout (and stderr), or exit on failure."""
        r = subprocess.run([*KIPUKA, *args], capture_output=True, text=True, timeout=600, env=self.env(),
                           cwd=tempfile.gettempdir())
        if r.returncode != 0:
            sys.exit(f"kipuka {' '.join(args[:3])} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        return r.stdout + (r.stderr if stderr else "")

    def kipuka(self, *args: str, stderr: bool = False) -> str:
        """A `kipuka` command on this deployment's configuration."""
        return self.cli(*args, "-c", str(self.config), stderr=stderr)

    def start(self) -> None:
        base = self.config.read_text()
        for node in self.nodes[1:]:  # configurations of the extra nodes, from the final kipuka.toml
            text = base
            for table in ("admin", "revocation"):
                text = re.sub(rf'(^\[{table}\][^\[]*?^listen = ")[^"]*"', rf'\g<1>127.0.0.1:{free_port()}"', text,
                              count=1, flags=re.M | re.S)
            node.config.write_text(text)
        for node in self.nodes:
            node.proc = subprocess.Popen([*KIPUKA, "serve", "-c", str(node.config), "--listen",
                                          f"127.0.0.1:{node.port}"], stdout=open(node.log, "ab"),
                                         stderr=subprocess.STDOUT, env=self.env(), cwd=tempfile.gettempdir())
            self._wait_up(node)
        for node in self.nodes:
            foreign = foreign_listeners(node.port, node.workers() + [node.proc.pid])  # type: ignore[union-attr]
            if foreign:
                self.stop()
                sys.exit(f"another process listens on 127.0.0.1:{node.port} too (SO_REUSEPORT): start again")

    def _wait_up(self, node: Node) -> None:
        assert node.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                sys.exit("kipuka serve exited:\n" + node.log.read_text()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("kipuka serve did not start listening")
        # every worker binds its own SO_REUSEPORT socket: wait until all of them are up
        while time.monotonic() < deadline and (
                not node.workers() or node.log.read_text().count("serving EST on") < len(node.workers())):
            time.sleep(0.1)
        time.sleep(0.5)

    def workers(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.workers()]

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc:
                try:
                    node.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    def url(self, node: Node, label: str | None = None) -> str:
        return f"https://127.0.0.1:{node.port}{EST}/" + (f"{label}/" if label else "") + "simpleenroll"

    # --- the admin API (bulk OTPs) --------------------------------------------------------

    def admin(self, method: str, path: str, body: object = None) -> object:
        if not self._token:
            self._token = self.kipuka("admin", "token", "create", f"bench-{uuid.uuid4().hex[:6]}").strip()
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection("localhost", self.admin_port, context=ctx, timeout=120)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        if r.status >= 300:
            sys.exit(f"admin API {method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def create_otps(self, entities: list[str], uses: int = 1, label: str | None = None) -> list[dict]:
        """OTPs in bulk through POST /admin/otp (one request per 1,000): items with id, entity, otp."""
        out: list[dict] = []
        for i in range(0, len(entities), 1000):
            items = [{"entity": e, "uses": uses, **({"label": label} if label else {})} for e in entities[i:i + 1000]]
            out += self.admin("POST", "/admin/otp", {"items": items})["items"]  # type: ignore[index]
        return out

    def revoke_otps(self, ids: list[int]) -> None:
        for otp_id in ids:
            self.admin("DELETE", f"/admin/otp/{otp_id}")


@dataclass
class Setup:
    """Everything a deployment is made from, for one run."""
    code: Code
    database: Database
    workers: int = 0
    nodes: int = 1
    ca: str | None = None  # None: the unlabeled path; "software" or "pkcs11" (`kipuka init --hsm`): /iot-fleet

    @property
    def label(self) -> str | None:
        """The iot-fleet label when comparing CA back ends: the one `kipuka init --hsm` puts in the token."""
        return "iot-fleet" if self.ca else None

    def deploy(self, root: Path) -> Deployment:
        url = self.database.create()
        hsm = SoftHSM(root / "softhsm") if self.ca == "pkcs11" else None
        log(f"deploying {self.code.name} ({self.code.rev}) on {self.database.kind}"
            + (f", {self.nodes} nodes" if self.nodes > 1 else "") + (", CA key in SoftHSM2" if hsm else ""))
        return Deployment(root, self.workers, code=self.code, database_url=url, hsm=hsm, nodes=self.nodes)
