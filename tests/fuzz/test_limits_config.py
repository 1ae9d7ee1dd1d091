"""The [server] limit keys and the [ratelimit] section: defaults, and what the configuration loader refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from kipuka.config import ConfigError, load_config
from tests.helpers import edit_config, run_cli


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("limits") / "demo"
    run_cli("init", str(d))
    return (d / "kipuka.toml").read_text()


@pytest.fixture
def cfg(generated: str, tmp_path: Path) -> Path:
    path = tmp_path / "kipuka.toml"
    path.write_text(generated)
    return path


def test_defaults_limit_hostile_clients_out_of_the_box(cfg: Path):
    config = load_config(cfg)
    s = config.server
    assert (s.header_timeout, s.body_timeout, s.max_header_size, s.max_headers, s.max_connections_per_client) == \
        (10, 30, 8190, 100, 100)
    assert config.ratelimit.enabled and (config.ratelimit.rate, config.ratelimit.burst) == (20, 200)


def test_durations_and_the_ratelimit_section_are_read(cfg: Path):
    edit_config(cfg, {r"^workers = 1.*$": 'workers = 1\nheader_timeout = "5s"\nbody_timeout = "2m"'},
                '\n[ratelimit]\nrate = 5\nburst = 50\nexempt = ["10.0.0.0/8", "2001:db8::/32"]\n')
    config = load_config(cfg)
    assert (config.server.header_timeout, config.server.body_timeout) == (5, 120)
    assert (config.ratelimit.rate, config.ratelimit.burst, config.ratelimit.exempt) == \
        (5, 50, ("10.0.0.0/8", "2001:db8::/32"))


@pytest.mark.parametrize("line,key", [
    ("header_timeout = 0", "server.header_timeout"),
    ('header_timeout = "1h"', "server.header_timeout"),
    ("body_timeout = -3", "server.body_timeout"),
    ("max_header_size = 100", "server.max_header_size"),
    ("max_headers = 5", "server.max_headers"),
    ("max_connections_per_client = -1", "server.max_connections_per_client"),
])
def test_bad_server_limits_are_refused_with_their_key(cfg: Path, line: str, key: str):
    edit_config(cfg, {r"^workers = 1.*$": f"workers = 1\n{line}"})
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.key == key


@pytest.mark.parametrize("line,key", [
    ("rate = 0", "ratelimit.rate"), ("burst = 0", "ratelimit.burst"), ('exempt = ["not-a-net"]', "ratelimit.exempt"),
    ("enabled = 1", "ratelimit.enabled"), ("per_minute = 5", "ratelimit.per_minute"),
])
def test_bad_ratelimit_keys_are_refused_with_their_key(cfg: Path, line: str, key: str):
    edit_config(cfg, append=f"\n[ratelimit]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.key == key
