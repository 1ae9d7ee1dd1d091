"""Test helpers: a real kipuka server process on loopback, CSRs, and an HTTPS client.

Every test talks to `kipuka serve` over real TLS; nothing here reaches into the
server's internals except the CLI commands an operator would run.
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests import der_strict

KIPUKA = [sys.executable, "-m", "kipuka"]
PKCS10 = {"Content-Type": "application/pkcs10"}
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


# Ports for test servers come from a block per xdist worker below the kernel's ephemeral range
# (32768+ on Linux). A port the kernel hands out for bind(0) can be taken, between choosing it
# and the server binding it, by another worker's server or by any outgoing connection's local
# port; CI lost a run to exactly that ("revocation.listen ... Address already in use").
_PORT_FLOOR, _PORT_CEILING = 20000, 32000


def _port_block() -> range:
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (_PORT_CEILING - _PORT_FLOOR) // workers
    start = _PORT_FLOOR + index * size
    return range(start, start + size)


def _ports() -> Iterator[int]:
    """This worker's block, from a random place in it: two test sessions on one machine (a
    developer's and CI's, say) then seldom walk the same ports at the same time."""
    block = _port_block()
    start = random.randrange(len(block))
    return itertools.cycle([*block[start:], *block[:start]])


_PORTS = _ports()


def free_port() -> int:
    """A port nothing listens on now and no other test worker will be given."""
    for _ in range(_PORT_CEILING - _PORT_FLOOR):
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's block")


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KIPUKA, *args], capture_output=True, text=True, check=check, timeout=120,
                          env={**os.environ, **(env or {})})


def edit_config(path: Path, replacements: dict[str, str] | None = None, append: str = "") -> None:
    """Change a generated kipuka.toml: regex replacements, then text appended at the end."""
    text = path.read_text()
    for pattern, repl in (replacements or {}).items():
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n, f"pattern {pattern!r} not found in {path}"
    path.write_text(text + append)


@dataclass
class Server:
    dir: Path
    port: int
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)
    admin_port: int = 0
    public_port: int = 0
    config_name: str = "kipuka.toml"

    def __post_init__(self) -> None:
        self.log = self.dir / "serve.log"

    @property
    def config(self) -> Path:
        return self.dir / self.config_name

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}/.well-known/est"

    def url(self, op: str, label: str | None = None) -> str:
        return f"{self.base}/{label}/{op}" if label else f"{self.base}/{op}"

    @property
    def ca_bundle(self) -> str:
        """The chain as a client gets it: decoded from /cacerts (bootstrapped without verification)."""
        path = self.dir / "ca-chain.pem"
        if not path.exists():
            r = requests.get(self.url("cacerts"), verify=False, timeout=10)
            r.raise_for_status()
            certs = certs_from(r)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # atomic: threads read it at once
            tmp.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
            tmp.replace(path)
        return str(path)

    def start(self, *extra: str) -> "Server":
        self.proc = subprocess.Popen([*KIPUKA, "serve", "-c", str(self.config), "--listen",
                                      f"127.0.0.1:{self.port}", *extra],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kipuka serve exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("kipuka serve did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def otp(self, entity: str, *args: str) -> str:
        out = run_cli("otp", "create", "-c", str(self.config), entity, *args)
        return out.stdout.strip()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(*args, "-c", str(self.config), check=check)

    def post(self, op: str, body: bytes, *, label: str | None = None, auth: tuple[str, str] | None = None,
             cert: tuple[str, str] | None = None, headers: dict | None = None) -> requests.Response:
        return requests.post(self.url(op, label), data=body, auth=auth, cert=cert, verify=self.ca_bundle,
                             headers=PKCS10 if headers is None else headers, timeout=30)

    def get(self, op: str, *, label: str | None = None, cert: tuple[str, str] | None = None) -> requests.Response:
        return requests.get(self.url(op, label), cert=cert, verify=self.ca_bundle, timeout=30)


def make_server(root: Path, *, replacements: dict[str, str] | None = None, append: str = "",
                key_type: str = "ec-p256", init_args: tuple[str, ...] = ()) -> Server:
    d = root / f"kipuka-{uuid.uuid4().hex[:8]}"
    admin_port, public_port = free_port(), free_port()
    run_cli("init", str(d), "--key-type", key_type, "--admin-listen", f"127.0.0.1:{admin_port}",
            "--revocation-listen", f"127.0.0.1:{public_port}", *init_args)
    database = fresh_database_url()
    if database:
        edit_config(d / "kipuka.toml", {r'^url = "sqlite:///kipuka.db".*$': f'url = "{database}"'})
    if replacements or append:
        edit_config(d / "kipuka.toml", replacements, append)
    srv = Server(d, free_port())
    srv.admin_port, srv.public_port = admin_port, public_port
    return srv


# --- CSRs and certificates -------------------------------------------------------------

def new_key(kind: str = "ec-p256"):
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind.startswith("ml-dsa-"):
        from kipuka import pq
        return pq.generate(kind)
    raise ValueError(kind)


def make_csr(cn: str | None, key=None, *, sans: list[x509.GeneralName] | None = None,
             hash_alg: hashes.HashAlgorithm | None = None, extensions: list[tuple[x509.ExtensionType, bool]] = (),
             attributes: list[tuple[x509.ObjectIdentifier, bytes]] = ()) -> tuple[object, bytes]:
    key = key or new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    for oid, value in attributes:
        builder = builder.add_attribute(oid, value)
    csr = builder.sign(key, None if _pure(key) else hash_alg or hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def _pure(key) -> bool:
    """Keys whose algorithm hashes inside (ML-DSA): sign(key, None)."""
    from kipuka import pq
    return pq.is_mldsa(key)


def b64(der: bytes, width: int = 64) -> bytes:
    text = base64.b64encode(der)
    return b"\n".join(text[i:i + width] for i in range(0, len(text), width)) + b"\n"


def certs_from(response: requests.Response) -> list[x509.Certificate]:
    """The certificates of a 200 certs-only response, after checking that its PKCS#7 is DER."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["Content-Type"] == CERTS_ONLY
    return certs_in_body(response.content)


def certs_in_body(body: bytes) -> list[x509.Certificate]:
    """The certificates of a base64 certs-only body, after checking that its PKCS#7 is DER."""
    return certs_in_der(base64.b64decode(body))


def certs_in_der(der: bytes) -> list[x509.Certificate]:
    """The certificates of a DER certs-only PKCS#7, checked to be DER (an unsorted SET OF fails)."""
    strict = der_strict.certs_only(der)
    certs = pkcs7.load_der_pkcs7_certificates(der)  # and cryptography reads it without its BER warning
    assert certs == strict
    return certs


def ordered_chain(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """The CA certificates of a certs-only set in chain order (issuing CA first, root last), by name.

    A PKCS#7 certificate set has no order, and DER sorts it by encoding: tests that mean
    "the issuing CA" find it by who issued whom, never by position in the set.
    """
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    (first,) = [c for c in certs if c.subject not in issuers]  # the one that signed none of the others
    chain = [first]
    while chain[-1].issuer != chain[-1].subject:
        chain.append(next(c for c in certs if c.subject == chain[-1].issuer))
    assert len(chain) == len(certs), "the set is not one chain"
    return chain


def spki(public_key) -> bytes:
    """The DER SubjectPublicKeyInfo of a key: compares keys of any type."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def unique(prefix: str = "device") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write_identity(directory: Path, name: str, key, cert: x509.Certificate) -> tuple[str, str]:
    """Key and certificate as PEM files, for requests' cert=(crt, key) and curl --cert/--key."""
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def enroll_identity(server: Server, directory: Path, entity: str | None = None, *, label: str | None = None,
                    key_kind: str = "ec-p256") -> tuple[str, str, x509.Certificate]:
    """Enroll a fresh device with an OTP; returns (cert path, key path, certificate)."""
    entity = entity or unique()
    otp = server.otp(entity, *(["--label", label] if label else []))
    key, der = make_csr(f"{entity}.example.com", new_key(key_kind))
    cert = certs_from(server.post("simpleenroll", b64(der), label=label, auth=(entity, otp)))[0]
    crt, k = write_identity(directory, entity, key, cert)
    return crt, k, cert




def sign_certificate(issuer_cert_path: Path, issuer_key_path: Path, public_key, cn: str, *,
                     days: float = 30, not_before_days: float = -1, ekus: list | None = None,
                     is_ca: bool = False, sans: list | None = None) -> x509.Certificate:
    """A certificate signed directly with a deployment's (or test's) CA key file."""
    import datetime as dt

    issuer = x509.load_pem_x509_certificate(issuer_cert_path.read_bytes())
    issuer_key = serialization.load_pem_private_key(issuer_key_path.read_bytes(), None)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(issuer.subject).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=not_before_days))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_test_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA of the test's own (a manufacturer's IDevID CA, an RA CA ...)."""
    import datetime as dt

    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, k = write_identity(directory, name, key, cert)
    return Path(crt), Path(k)


def admin_token(server: Server, name: str = "tests") -> str:
    return server.cli("admin", "token", "create", name).stdout.strip()


def admin_call(server: Server, method: str, path: str, token: str | None = None, *, json_body=None,
               params: dict | None = None, cert: tuple[str, str] | None = None, data: bytes | None = None
               ) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"https://localhost:{server.admin_port}{path}", headers=headers,
                            json=json_body, params=params, cert=cert, data=data, verify=server.ca_bundle,
                            timeout=30)


def public_url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.public_port}{path}"


# --- database under test ---------------------------------------------------------------
# KIPUKA_TEST_DATABASE=postgresql://127.0.0.1:5432/test runs every server of the suite on
# a fresh PostgreSQL database of its own (created here, dropped at the end of the session).

TEST_DATABASE = os.environ.get("KIPUKA_TEST_DATABASE", "")
CREATED_DATABASES: list[str] = []


def fresh_database_url() -> str | None:
    if not TEST_DATABASE.startswith("postgres"):
        return None
    import psycopg

    name = f"kipuka_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(TEST_DATABASE, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    CREATED_DATABASES.append(name)
    return TEST_DATABASE.rsplit("/", 1)[0] + "/" + name


def drop_test_databases() -> None:
    if not CREATED_DATABASES:
        return
    import psycopg

    with psycopg.connect(TEST_DATABASE, autocommit=True) as conn:
        for name in CREATED_DATABASES:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    CREATED_DATABASES.clear()


def db_url(server: Server) -> str:
    """The server's database as an SQLAlchemy URL, whichever engine it runs on."""
    import tomllib

    from kipuka.store.base import engine_url
    url = tomllib.loads(server.config.read_text())["database"]["url"]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(server.dir / url[len("sqlite:///"):])
    return engine_url(url)


def db_execute(server: Server, sql: str, params: dict | None = None) -> list:
    """Run SQL on the server's database, as an operator (or an attacker) with database access would."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url(server))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params or {})
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()
