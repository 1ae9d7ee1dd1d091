"""The server every interop test talks to: the `kipuka init` demo with all six operations on.

On top of the demo configuration: /serverkeygen and /fullcmc are on for every label;
the unlabeled path and iot-fleet deliver server-generated keys as application/pkcs8
(the form Bouncy Castle's EST client reads), corp-devices as CMS encrypted to the
CSR's key (the form the reference page describes).
"""

from __future__ import annotations

import pytest

from tests.helpers import Server, make_server

INTEROP_POLICY = """[policy]
serverkeygen = true
serverkeygen_deliveries = ["pkcs8", "csr-key"]
fullcmc = true"""


@pytest.fixture(scope="package")
def interop_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = make_server(tmp_path_factory.mktemp("interop"), replacements={
        r"^\[policy\]$": INTEROP_POLICY,
        r"^\[labels\.corp-devices\]$": '[labels.corp-devices]\nserverkeygen_deliveries = ["csr-key"]',
    }).start()
    yield srv
    srv.stop()
