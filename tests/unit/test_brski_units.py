"""BRSKI pieces that need no server: the voucher JSON, the IDevID fields, the MASA URL and [brski]."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from kipuka.brski import idevid
from kipuka.brski.voucher import Voucher, VoucherError, VoucherRequest
from kipuka.config import ConfigError, load_config
from kipuka.cli.init import init_deployment
from tests.brski.pki import idevid as make_idevid
from tests.brski.pki import make_ca


def test_a_voucher_request_survives_json_and_keeps_its_leaves():
    vr = VoucherRequest(created_on=dt.datetime(2026, 5, 9, 10, 15, 2, 311000, tzinfo=dt.timezone.utc),
                        nonce=b"0123456789abcdef", serial_number="JADA-1", assertion="proximity",
                        prior_signed_voucher_request=b"\x30\x00")
    text = vr.to_json()
    assert b'"created-on":"2026-05-09T10:15:02.311Z"' in text
    assert VoucherRequest.from_json(text) == vr


@pytest.mark.parametrize("body,why", [
    (b"not json", "not JSON"),
    (b'{"ietf-voucher:voucher": {}}', "no 'ietf-voucher-request:voucher'"),
    (b'{"ietf-voucher-request:voucher": {"nonce": "***"}}', "base64"),
    (b'{"ietf-voucher-request:voucher": {"assertion": "trust-me"}}', "assertion"),
    (b'{"ietf-voucher-request:voucher": {"created-on": "yesterday"}}', "date-time"),
    (b'{"ietf-voucher-request:voucher": {"created-on": "2026-05-09T10:15:02"}}', "time zone"),
    (b'{"ietf-voucher-request:voucher": {"proximity-registrar-cert": "MAA="}}', "DER certificate"),
    (b'{"ietf-voucher-request:voucher": {"serial-number": ""}}', "serial-number"),
])
def test_a_malformed_voucher_request_is_a_400_with_its_reason(body, why):
    with pytest.raises(VoucherError, match=why):
        VoucherRequest.from_json(body)


def test_a_voucher_needs_its_mandatory_leaves():
    with pytest.raises(VoucherError, match="pinned-domain-cert"):
        Voucher.from_json(b'{"ietf-voucher:voucher": {"created-on": "2026-05-09T10:15:02Z", '
                          b'"assertion": "logged", "serial-number": "X"}}')


def test_the_idevid_gives_its_serial_number_masa_url_and_issuer_key_id():
    ca = make_ca("maker")
    device = make_idevid(ca, "JADA-7", "masa.example.com:8443")
    assert idevid.serial_number(device.cert) == "JADA-7"
    assert idevid.masa_url(device.cert) == "masa.example.com:8443"
    aki = idevid.idevid_issuer(device.cert)
    assert aki[:2] == b"\x04\x14" and len(aki) == 22


@pytest.mark.parametrize("value,url", [
    ("masa.example.com", "https://masa.example.com/.well-known/brski/requestvoucher"),
    ("masa.example.com:8443", "https://masa.example.com:8443/.well-known/brski/requestvoucher"),
    ("https://masa.example.com/acme/", "https://masa.example.com/acme/.well-known/brski/requestvoucher"),
    ("https://masa.example.com/.well-known/brski", "https://masa.example.com/.well-known/brski/requestvoucher"),
])
def test_the_masa_url_becomes_the_requestvoucher_endpoint(value, url):
    assert idevid.requestvoucher_url(value) == url


@pytest.mark.parametrize("value", ["http://masa.example.com", "https://masa.example.com/?x=1", "https://",
                                   "ftp://masa.example.com"])
def test_a_masa_url_that_is_not_https_is_refused(value):
    with pytest.raises(idevid.IdevidError):
        idevid.requestvoucher_url(value)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    d = tmp_path_factory.mktemp("brski-config") / "d"
    init_deployment(d)
    return d


BRSKI = """
[brski]
registrar_cert = "tls/server.pem"
registrar_key = "private/tls-server.key"
{extra}
[brski.manufacturers.acme]
ca = "ca/root.pem"
{maker}
"""


def _load(deployment, tmp_path, extra="", maker=""):
    d = tmp_path / "d"
    shutil.copytree(deployment, d)
    config = d / "kipuka.toml"
    config.write_text(config.read_text() + BRSKI.format(extra=extra, maker=maker))
    return load_config(config)


def test_a_brski_section_is_read_with_its_defaults(deployment, tmp_path):
    config = _load(deployment, tmp_path, maker='owned_serials = ["JADA-*"]')
    assert config.brski.unknown_devices == "reject" and config.brski.retry_after == 30
    assert config.brski.manufacturers["acme"].owned_serials == ("JADA-*",)
    assert config.brski.client_cas() == (tmp_path / "d" / "ca" / "root.pem",)


@pytest.mark.parametrize("extra,maker,key", [
    ('retry_after = "2m"', "", "brski.retry_after"),
    ('unknown_devices = "maybe"', "", "brski.unknown_devices"),
    ('label = "no-such"', "", "brski.label"),
    ("", 'label = "no-such"', "brski.manufacturers.acme.label"),
    ("", 'masa_url = "http://masa.example"', "brski.manufacturers.acme.masa_url"),
    ("", "colour = 1", "brski.manufacturers.acme.colour"),
])
def test_a_bad_brski_key_is_a_configuration_error_naming_it(deployment, tmp_path, extra, maker, key):
    with pytest.raises(ConfigError) as err:
        _load(deployment, tmp_path, extra, maker)
    assert err.value.key == key


def test_a_registrar_key_that_is_not_the_certificates_is_a_configuration_error(deployment, tmp_path):
    from kipuka.brski.settings import check_files
    config = _load(deployment, tmp_path)
    broken = config.brski.__class__(**{**config.brski.__dict__,
                                       "registrar_key": tmp_path / "d" / "private" / "default.key"})
    with pytest.raises(ConfigError, match="not the key of registrar_cert"):
        check_files(broken)
