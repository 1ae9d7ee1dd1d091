"""Fixtures of the EST client tests: the real server (from tests/conftest.py) and replay servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from kipuka.client import EstClient
from kipuka.client.verify import fingerprint
from tests.client.fakes import ReplayServer, TestCA


@pytest.fixture(scope="session")
def replay_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("replay-ca"))


@pytest.fixture
def replay(replay_ca: TestCA):
    """A factory for replay servers (raw HTTP/1.1 over TLS); all stopped after the test."""
    started: list[ReplayServer] = []

    def factory(**kwargs) -> ReplayServer:
        srv = ReplayServer(replay_ca, **kwargs).start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def est(server):
    """EstClient factory bound to the shared real server, trusting its published chain."""
    clients: list[EstClient] = []

    def factory(label: str | None = None, **kwargs) -> EstClient:
        kwargs.setdefault("trust", server.ca_bundle)
        client = EstClient(f"https://localhost:{server.port}", label, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def root_fingerprint(server) -> str:
    return fingerprint(x509.load_pem_x509_certificate((Path(server.dir) / "ca" / "root.pem").read_bytes()))


@pytest.fixture(scope="session")
def otp_pool(server) -> tuple[str, str]:
    """One multi-use OTP (valid on every label) for tests where the OTP itself is not the subject.

    `kipuka otp create` is a process start per OTP; sharing one keeps the suite fast. Tests
    about OTP behaviour (wrong, consumed) use their own entities and never this one, so its
    failure counter (lockout) is never touched.
    """
    from tests.helpers import unique
    entity = unique("est-client")
    return entity, server.otp(entity, "--uses", "1000", "--label", "any")


@pytest.fixture(scope="session")
def keygen_server(tmp_path_factory: pytest.TempPathFactory):
    """A server with /serverkeygen on (the labels of tests/test_serverkeygen.py): (server, entity, otp)."""
    from tests.helpers import unique
    from tests.test_serverkeygen import keygen_server as make_keygen_server

    srv = make_keygen_server(tmp_path_factory.mktemp("client-keygen")).start()
    entity = unique("keygen-client")
    yield srv, entity, srv.otp(entity, "--uses", "1000", "--label", "any")
    srv.stop()


@pytest.fixture(scope="module")
def agent_srv(tmp_path_factory: pytest.TempPathFactory):
    """A server of the module's own with the agent tests' labels (`tests/client/agent_util.py`):
    `short` (2-minute certificates), `held` (approval), `idevid` (a bootstrap anchor)."""
    from tests.client.agent_util import agent_server

    srv = agent_server(tmp_path_factory.mktemp("agent-server")).start()
    yield srv
    srv.stop()
