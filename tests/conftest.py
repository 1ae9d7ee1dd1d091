import warnings
from pathlib import Path

import pytest
import urllib3

from tests.helpers import Server, drop_test_databases, make_server

warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The demo deployment exactly as `kipuka init` makes it, served on a free port."""
    srv = make_server(tmp_path_factory.mktemp("shared")).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path):
    """A factory for a server with its own configuration edits; stopped after the test."""
    started: list[Server] = []

    def factory(**kwargs) -> Server:
        srv = make_server(tmp_path, **kwargs).start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


def pytest_sessionfinish(session, exitstatus):
    drop_test_databases()


def pytest_report_header(config):
    from tests.helpers import TEST_DATABASE
    return f"kipuka test database: {TEST_DATABASE or 'SQLite (set KIPUKA_TEST_DATABASE for PostgreSQL)'}"
