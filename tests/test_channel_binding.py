"""Linking identity and proof of possession (RFC 7030 §3.5): tls-unique on TLS 1.2 and, as a
kipuka extension, tls-exporter (RFC 9266) on TLS 1.3."""

import base64
import re
import socket
import ssl
import subprocess

import pytest
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID
from cryptography import x509

from kipuka.tlsbinding import tls_exporter
from tests.helpers import (b64, make_csr, make_test_ca, new_key, sign_certificate, unique,
                           write_identity)

LINKED = {r"^reenroll_requires_approval = false.*$": "reenroll_requires_approval = false\nrequire_linking = true"}


def _post_on(tls: ssl.SSLSocket, path: str, body: bytes, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\nConnection: close\r\n"
    if auth:
        head += "Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() + "\r\n"
    tls.sendall((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    reply = b""
    while chunk := tls.recv(65536):
        reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1]


def _enroll_linked(srv, version: ssl.TLSVersion, *, tamper: bool = False, cert=None, label=None, link=True):
    entity = unique()
    otp = srv.otp(entity, *(["--label", label] if label else []))
    ctx = ssl.create_default_context(cafile=srv.ca_bundle)
    ctx.minimum_version = ctx.maximum_version = version
    if cert:
        ctx.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", srv.port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        if version == ssl.TLSVersion.TLSv1_2:
            binding = tls.get_channel_binding("tls-unique")
        else:
            binding = tls_exporter(tls)
        password = base64.b64encode(binding if not tamper else bytes(len(binding)))
        attrs = [(AttributeOID.CHALLENGE_PASSWORD, password)] if link else []
        name = f"{entity}.example.com" if not cert else "device-77.example.com"
        _, der = make_csr(name, attributes=attrs)
        path = f"/.well-known/est/{label + '/' if label else ''}simpleenroll"
        return _post_on(tls, path, b64(der), None if cert else (entity, otp))


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    from tests.helpers import make_server
    srv = make_server(tmp_path_factory.mktemp("linked"), replacements=LINKED).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_csr_linked_to_the_tls_session_is_accepted(linked, version):
    status, body = _enroll_linked(linked, version)
    assert status == 200, body


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_wrong_channel_binding_is_400(linked, version):
    status, body = _enroll_linked(linked, version, tamper=True)
    assert status == 400 and b"does not match" in body


def test_unlinked_csr_is_400_where_the_label_requires_linking(linked):
    status, body = _enroll_linked(linked, ssl.TLSVersion.TLSv1_3, link=False)
    assert status == 400 and b"requires the CSR to be linked" in body


def test_a_linked_csr_cannot_be_replayed_on_another_connection(linked):
    entity = unique()
    otp = linked.otp(entity)
    ctx = ssl.create_default_context(cafile=linked.ca_bundle)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", linked.port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as first:
        binding = first.get_channel_binding("tls-unique")
    _, der = make_csr(f"{entity}.example.com", attributes=[(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(binding))])
    r = linked.post("simpleenroll", b64(der), auth=(entity, otp))
    assert r.status_code == 400 and "does not match" in r.text


def test_csrattrs_asks_for_challenge_password(linked):
    der = base64.b64decode(linked.get("csrattrs").content)
    assert bytes.fromhex("06092a864886f70d010907") in der  # OID 1.2.840.113549.1.9.7


def test_ra_clients_are_exempt(tmp_path, fresh_server):
    ca_crt, ca_key = make_test_ca(tmp_path, "RA CA")
    srv = fresh_server(replacements={**LINKED, r"^csrattrs = true.*$": f'csrattrs = true\nra_anchors = ["{ca_crt}"]'})
    with open(srv.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ca_crt.read_bytes())
    srv.stop(); srv.start()
    key = new_key()
    ra = sign_certificate(ca_crt, ca_key, key.public_key(), "ra-agent",
                          ekus=[x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28"), ExtendedKeyUsageOID.CLIENT_AUTH])
    crt, k = write_identity(tmp_path, "ra", key, ra)
    r = srv.post("simpleenroll", b64(make_csr("device-77.example.com")[1]), cert=(crt, k))
    assert r.status_code == 200, r.text
    # A device CSR linked to the device's own session with the RA: its challengePassword cannot
    # match the RA's session here, and the RA already checked it (RFC 7030 §3.7).
    linked_elsewhere = [(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(bytes(range(12))))]
    r = srv.post("simpleenroll", b64(make_csr("device-78.example.com", attributes=linked_elsewhere)[1]),
                 cert=(crt, k))
    assert r.status_code == 200, r.text


def test_tls_exporter_matches_an_independent_client(linked, tmp_path):
    """openssl s_client computes the RFC 9266 exporter itself; kipuka must agree."""
    entity = unique()
    otp = linked.otp(entity)
    proc = subprocess.Popen(["openssl", "s_client", "-tls1_3", "-connect", f"127.0.0.1:{linked.port}",
                             "-servername", "localhost", "-CAfile", linked.ca_bundle,
                             "-keymatexport", "EXPORTER-Channel-Binding", "-keymatexportlen", "32", "-ign_eof"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    while not re.search(rb"Keying material: ([0-9A-F]{64})", seen):
        line = proc.stdout.readline()
        assert line, seen.decode(errors="replace")
        seen += line
    exporter = bytes.fromhex(re.search(rb"Keying material: ([0-9A-F]{64})", seen).group(1).decode())
    _, der = make_csr(f"{entity}.example.com", attributes=[(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(exporter))])
    body = b64(der)
    auth = base64.b64encode(f"{entity}:{otp}".encode()).decode()
    request = (f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\n"
               f"Authorization: Basic {auth}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    out, _ = proc.communicate(request, timeout=30)
    assert b"HTTP/1.1 200" in out, out[-500:]


@pytest.mark.parametrize("binding", ["tls-unique", True], ids=["tls-unique", "the-connections-own"])
def test_kipuka_client_links_its_csr_on_tls_1_2_and_1_3(linked, binding):
    from cryptography import x509 as _x509
    from kipuka import client as est
    entity = unique()
    otp = linked.otp(entity)
    c = est.EstClient(f"https://localhost:{linked.port}", trust=linked.ca_bundle, auth=(entity, otp),
                      channel_binding=binding)
    spec = est.CsrSpec(key=new_key(), subject=_x509.Name([_x509.NameAttribute(_x509.oid.NameOID.COMMON_NAME,
                                                                              f"{entity}.example.com")]))
    issued = c.simpleenroll(spec)
    assert issued.certificate.subject.rfc4514_string() == f"CN={entity}.example.com"


def test_kipuka_est_links_its_csr_by_itself_when_csrattrs_ask_for_it_on_tls_1_3(linked, tmp_path, capsys):
    """/csrattrs of a require_linking label names challengePassword (RFC 7030 §3.5): the command line
    turns channel binding on without being told, on TLS 1.3 (tls-exporter) as well."""
    from kipuka.client.cli import main
    entity = unique()
    code = main(["enroll", "-s", f"https://localhost:{linked.port}", "--trust", linked.ca_bundle, "-u", entity,
                 "--otp", linked.otp(entity), "--cn", f"{entity}.example.com",
                 "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "k.pem")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "csrattrs ask for channel binding" in err
