"""Bouncy Castle's EST client (org.bouncycastle.est) against kipuka, a whole matrix in one JVM.

tests/interop/java/EstDriver.java runs, for TLS 1.2 and TLS 1.3 (one version pinned per
socket) and for the unlabeled path and the iot-fleet label: cacerts, csrattrs, enroll
(BC's HttpAuth sends Basic only after the 401 challenge), reenroll (mTLS with the
certificate just enrolled) and serverkeygen. It prints one JSON line per operation; each
(operation, label, TLS version) is a test of its own here, which checks what BC got
against what the server holds: the label's CA files, the server's certificate store
(`kipuka certs list --json`), its access log and its /csrattrs as Python decodes it.

BC's enrollPop (tls-unique in challengePassword) is not driven: it needs a channel
binding provider, which only BC's own JSSE (bctls, not packaged by Debian) can supply.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyasn1.codec.der import decoder as der_decoder
from pyasn1_modules import rfc7030

from tests.helpers import KIPUKA, Server, spki, unique
from tests.interop.jvm import compile_or_skip

DRIVER = Path(__file__).parent / "java" / "EstDriver.java"
TLS = ["TLSv1.2", "TLSv1.3"]
LABELS = ["", "iot-fleet"]
CELLS = [(label, tls) for tls in TLS for label in LABELS]
IDS = [f"{label or 'unlabeled'}-{tls}" for label, tls in CELLS]
CA_OF = {"": "default", "iot-fleet": "iot-fleet"}
VALIDITY_DAYS = {"": 365, "iot-fleet": 90}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


@dataclass
class Matrix:
    server: Server
    cells: dict[tuple[str, str, str], dict]  # (op, label, tls) -> the driver's JSON object
    store: dict[int, dict]                    # serial -> `kipuka certs list --json` record
    access: list[dict]                        # the server's access log lines written during the run
    entities: dict[str, str]                  # label -> OTP entity

    def cell(self, op: str, label: str, tls: str) -> dict:
        c = self.cells.get((op, label, tls))
        assert c is not None, f"the driver printed nothing for {op} {label!r} {tls}"
        assert c["ok"], f"Bouncy Castle failed: {c.get('error')}"
        return c


@pytest.fixture(scope="module")
def matrix(interop_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    d = tmp_path_factory.mktemp("bc-est")
    java = compile_or_skip(d / "classes", files=[DRIVER])
    srv = interop_server
    entities, props = {}, [f"server=localhost:{srv.port}", f"trust={srv.dir / 'ca' / 'root.pem'}",
                           f"tls={','.join(TLS)}", f"labels={','.join(LABELS)}"]
    for label in LABELS:
        entities[label] = unique("bc")
        # enroll + serverkeygen on each TLS version; the OTP is bound to the label it is used on
        otp = srv.otp(entities[label], "--uses", str(2 * len(TLS)), *(["--label", label] if label else []))
        props += [f"user.{label}={entities[label]}", f"otp.{label}={otp}"]
    (d / "matrix.properties").write_text("\n".join(props) + "\n")
    log_start = srv.log.stat().st_size
    out = java.run("EstDriver", str(d / "matrix.properties"), timeout=120)
    cells = {}
    for line in out.splitlines():
        c = json.loads(line)
        cells[(c["op"], c["label"], c["tls"])] = c
    listing = subprocess.run([*KIPUKA, "certs", "list", "-c", str(srv.config), "--json", "--limit", "100000"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    # the server writes access lines in batches at most AccessLog.FLUSH_AFTER (50 ms) late
    time.sleep(0.3)
    with open(srv.log, "rb") as fh:
        fh.seek(log_start)
        access = [json.loads(l) for l in fh.read().decode().splitlines() if '"kipuka.access"' in l]
    store = {int(r["serial"], 16): r for r in map(json.loads, listing.splitlines())}
    return Matrix(srv, cells, store, access, entities)


# --- checks shared by the cells ------------------------------------------------------------------

def _der(b64: str) -> bytes:
    return base64.b64decode(b64)


def _cert(b64: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(_der(b64))


def _pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _label_ca(m: Matrix, label: str) -> x509.Certificate:
    return _pem(m.server.dir / "ca" / f"{CA_OF[label]}.pem")


def _tls(c: dict, tls: str, *, challenge: bool = False, client_certificate: bool = False) -> None:
    """Every connection of the operation ran the pinned TLS version, with the expected credentials."""
    conns = c.get("connections") or [c]
    assert [x["protocol"] for x in conns] == [tls] * len(conns), conns
    for x in conns:
        name = x["cipher"]
        assert ("_GCM_" in name or "CHACHA20_POLY1305" in name), name
        if tls == "TLSv1.2":
            assert name.startswith("TLS_ECDHE_"), name
    if challenge:
        # BC's HttpAuth: first the request alone, then (after the 401) with Basic credentials
        assert [x["authorization"] for x in conns] == [False, True], conns
    if "connections" in c:
        assert [x["client_certificate"] for x in conns] == [client_certificate] * len(conns), conns


def _path(label: str, op: str) -> str:
    return f"/.well-known/est/{label}/{op}" if label else f"/.well-known/est/{op}"


def _issued(m: Matrix, c: dict, label: str, *, cn: str, auth: str) -> x509.Certificate:
    """One certificate, issued by the label's CA, for this CN, and recorded so by the server."""
    assert len(c["certs"]) == 1, c["certs"]
    cert = _cert(c["certs"][0])
    ca = _label_ca(m, label)
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == f"CN={cn}"
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc) / dt.timedelta(days=1)
    assert abs(days - VALIDITY_DAYS[label]) < 1, days  # the label's policy, not the default's
    record = m.store.get(cert.serial_number)
    assert record is not None, "the server has no record of the certificate Bouncy Castle received"
    assert (record["ca"], record["label"], record["auth"], record["subject"]) == (CA_OF[label], label, auth, f"CN={cn}")
    return cert


def _cn(m: Matrix, label: str, tls: str, suffix: str = "") -> str:
    tag = tls.replace("TLSv", "t").replace(".", "")
    return f"{m.entities[label]}.{tag}{'-' + label if label else ''}{suffix}.example.com"


# --- the cells -------------------------------------------------------------------------------------

@pytest.mark.parametrize("label,tls", CELLS, ids=IDS)
def test_bc_cacerts(matrix: Matrix, label: str, tls: str):
    c = matrix.cell("cacerts", label, tls)
    _tls(c, tls)
    assert c["trusted"] is True
    got = {_cert(b) for b in c["certs"]}
    assert got == {_label_ca(matrix, label), _pem(matrix.server.dir / "ca" / "root.pem")}
    # the server's TLS chain reached BC whole: leaf and the issuing CA under the root
    chain = [_cert(b) for b in c["server_chain"]]
    assert len(chain) >= 2 and chain[0].issuer == chain[1].subject


@pytest.mark.parametrize("label,tls", CELLS, ids=IDS)
def test_bc_csrattrs(matrix: Matrix, label: str, tls: str):
    c = matrix.cell("csrattrs", label, tls)
    _tls(c, tls)
    assert c["has_attributes"] is True
    # what BC parsed is what the server serves, as pyasn1 decodes it
    r = requests.get(matrix.server.url("csrattrs", label or None), verify=matrix.server.ca_bundle, timeout=30)
    assert r.status_code == 200
    served = base64.b64decode(r.content)
    assert _der(c["der"]) == served
    attrs, _ = der_decoder.decode(served, asn1Spec=rfc7030.CsrAttrs())
    oids = set()
    for item in attrs:
        if item.getName() == "oid":
            oids.add(str(item["oid"]))
        else:
            oids.add(str(item["attribute"]["attrType"]))
    assert set(c["requirements"]) == oids
    assert EC_PUBLIC_KEY in oids
    # iot-fleet accepts EC keys only; the unlabeled path RSA as well
    assert (RSA_ENCRYPTION in oids) == (label == "")


@pytest.mark.parametrize("label,tls", CELLS, ids=IDS)
def test_bc_enroll_with_basic_after_the_401_challenge(matrix: Matrix, label: str, tls: str):
    c = matrix.cell("enroll", label, tls)
    _tls(c, tls, challenge=True)
    cert = _issued(matrix, c, label, cn=_cn(matrix, label, tls), auth="otp")
    assert spki(cert.public_key()) == _der(c["spki"])
    statuses = [a["status"] for a in matrix.access if a["path"] == _path(label, "simpleenroll")]
    assert statuses == [401, 200] * len(TLS), statuses


@pytest.mark.parametrize("label,tls", CELLS, ids=IDS)
def test_bc_reenroll_over_mtls(matrix: Matrix, label: str, tls: str):
    c = matrix.cell("reenroll", label, tls)
    _tls(c, tls, client_certificate=True)
    assert [x["authorization"] for x in c["connections"]] == [False]
    previous = _cert(c["previous"])
    cert = _issued(matrix, c, label, cn=_cn(matrix, label, tls), auth="mtls")
    assert cert.serial_number != previous.serial_number
    assert spki(cert.public_key()) == _der(c["spki"]) == spki(previous.public_key())
    statuses = [a["status"] for a in matrix.access if a["path"] == _path(label, "simplereenroll")]
    assert statuses == [200] * len(TLS), statuses


@pytest.mark.parametrize("label,tls", CELLS, ids=IDS)
def test_bc_serverkeygen(matrix: Matrix, label: str, tls: str):
    c = matrix.cell("serverkeygen", label, tls)
    _tls(c, tls, challenge=True)
    cert = _issued(matrix, c, label, cn=_cn(matrix, label, tls, "-keygen"), auth="otp")
    key = serialization.load_der_private_key(_der(c["key"]), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(key.public_key()) == spki(cert.public_key())
    assert spki(cert.public_key()) != _der(c["throwaway_spki"]), "the server certified the CSR's key"
    statuses = [a["status"] for a in matrix.access if a["path"] == _path(label, "serverkeygen")]
    assert statuses == [401, 200] * len(TLS), statuses

