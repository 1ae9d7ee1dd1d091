"""Unit tests of the client's decoders and helpers (no network)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat

import pytest

from kipuka.client import BootstrapError, EstError, InvalidResponse
from kipuka.client.exchange import _split_url, wire_body
from kipuka.client.files import parse_duration, write_atomic
from kipuka.client.verify import bootstrap_set, fingerprint, normalise_fingerprint
from kipuka.client import wire
from tests import der_strict
from tests.client.fakes import b64_lines, certs_only

DER = bytes(range(256)) * 3


@pytest.mark.parametrize("body", [
    b64_lines(b"\x30" + DER, 64, b"\n"),
    b64_lines(b"\x30" + DER, 76, b"\r\n"),
    base64.b64encode(b"\x30" + DER),
    base64.b64encode(b"\x30" + DER) + b"\r\n\x00",
    b"  " + b64_lines(b"\x30" + DER, 64, b"\r\n").replace(b"\r\n", b"\r\n\t") + b"\n\n",
    base64.b64encode(b"\x30" + DER).rstrip(b"="),
    base64.urlsafe_b64encode(b"\x30" + DER),
    b"-----BEGIN PKCS7-----\r\n" + b64_lines(b"\x30" + DER, 64, b"\r\n") + b"-----END PKCS7-----\r\n",
])
def test_decode_body_accepts_every_base64_form(body):
    assert wire.decode_body(body, "test") == b"\x30" + DER


def test_decode_body_raw_der_and_errors():
    der = b"\x30\x82\x01\x00" + DER[:256]
    assert wire.decode_body(der, "t") == der
    assert wire.decode_body(der, "t", "binary") == der
    with pytest.raises(InvalidResponse, match="empty body"):
        wire.decode_body(b" \r\n", "t")
    with pytest.raises(InvalidResponse, match="neither base64 nor DER"):
        wire.decode_body(b"\x01\x02not der", "t")
    with pytest.raises(InvalidResponse, match="not valid base64"):
        wire.decode_body(b"abc=def=", "t")


def test_media_types():
    mt = wire.parse_media_type('Application/PKCS7-MIME ;  SMIME-Type="certs-only"')
    assert mt.type == "application/pkcs7-mime" and mt.smime_type == "certs-only" and wire.is_certs_media(mt)
    assert wire.is_certs_media(wire.parse_media_type("application/pkcs7-mime"))
    assert not wire.is_certs_media(wire.parse_media_type("application/pkcs7-mime; smime-type=server-generated-key"))
    assert wire.parse_media_type('multipart/mixed; boundary="a;b"').params["boundary"] == "a;b"
    assert wire.parse_media_type(None).type == ""


def test_multipart_tolerates_preamble_lf_and_missing_close():
    body = (b"preamble\r\n--B\nContent-Type: text/plain\n continued\n\nfirst\n--B\r\n"
            b"Content-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n")
    parts = wire.multipart(body, wire.parse_media_type("multipart/mixed; boundary=B"))
    assert [p.body for p in parts] == [b"first", b"AAAA"]
    assert parts[0].headers["content-type"] == "text/plain continued"
    assert parts[1].transfer_encoding == "base64"
    with pytest.raises(InvalidResponse, match="boundary"):
        wire.multipart(body, wire.parse_media_type("multipart/mixed"))
    with pytest.raises(InvalidResponse, match="no part"):
        wire.multipart(b"nothing", wire.parse_media_type("multipart/mixed; boundary=B"))


def test_multipart_binary_part_keeps_its_bytes():
    payload = b"\x30\x0d\n\r\n--\x00\xff"
    body = b"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--b--\r\n\r\n"
    assert wire.multipart(body, wire.parse_media_type("multipart/mixed; boundary=b"))[0].body == payload


def test_retry_after():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    assert wire.retry_after("120") == 120
    assert wire.retry_after(" 5 ") == 5
    assert wire.retry_after("Tue, 01 Jan 2030 00:01:00 GMT", now) == 60
    assert wire.retry_after("Mon, 31 Dec 2029 00:00:00 GMT", now) == 0
    assert wire.retry_after("soon") is None and wire.retry_after(None) is None


def test_error_reasons():
    assert wire.error_reason(b"invalid entity id or OTP\n", "text/plain", "x") == "invalid entity id or OTP"
    assert wire.error_reason(b"\n\n  first  line \nsecond", "text/plain", "x") == "first line"
    assert wire.error_reason(b'{"type":"about:blank","detail":"CSR refused"}', "application/problem+json", "x") \
        == "CSR refused"
    assert wire.error_reason(b"", "text/plain", "Not Found") == "Not Found"
    assert len(wire.error_reason(b"a" * 5000, "text/plain", "x")) == wire.MAX_REASON


def test_csrattrs_rfc7030_example():
    # RFC 7030 4.5.2 example: challengePassword, ecPublicKey with secp384r1, extensionRequest
    # with macAddress, ecdsa-with-SHA384
    example = base64.b64decode("MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw==")
    attrs = wire.csr_attributes(example)
    assert attrs.wants_challenge_password
    assert attrs.key_types() == ["ec-p384"] and attrs.key_type() == "ec-p384"
    assert attrs.signature_hash() == "sha384"
    assert attrs.extension_requests == ("1.3.6.1.1.1.1.22",)
    with pytest.raises(InvalidResponse):
        wire.csr_attributes(b"\x04\x01\x00")


def test_wire_body_is_64_column_lf():
    body = wire_body(DER)
    assert all(len(line) == 64 for line in body.split(b"\n")[:-2]) and body.endswith(b"\n") and b"\r" not in body
    assert base64.b64decode(body) == DER


@pytest.mark.parametrize("url,expected", [
    ("https://est.example.com:9443", ("est.example.com", 9443, "/.well-known/est", None)),
    ("est.example.com", ("est.example.com", 443, "/.well-known/est", None)),
    ("https://h/.well-known/est/iot-fleet/", ("h", 443, "/.well-known/est", "iot-fleet")),
    ("https://h:1/proxy/.well-known/est", ("h", 1, "/proxy/.well-known/est", None)),
    ("https://[::1]:9443/", ("::1", 9443, "/.well-known/est", None)),
])
def test_split_url(url, expected):
    assert _split_url(url) == expected


def test_split_url_refuses_plain_http():
    with pytest.raises(EstError, match="https"):
        _split_url("http://est.example.com")


def test_fingerprint_forms(replay_ca):
    fp = fingerprint(replay_ca.root)
    colon = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    for form in (fp, colon, f"sha256:{fp}", f"SHA256 Fingerprint={colon}", f"  {fp.upper()}\n"):
        assert normalise_fingerprint(form) == fp
    with pytest.raises(BootstrapError, match="64 hex digits"):
        normalise_fingerprint("abcd")


def test_bootstrap_set_keeps_what_is_joined_by_signatures(replay_ca, tmp_path):
    from tests.client.fakes import TestCA
    stranger = TestCA(tmp_path / "other", "Stranger")
    certs = [replay_ca.issuing, stranger.root, replay_ca.root]
    assert bootstrap_set(certs, fingerprint(replay_ca.root)) == [replay_ca.root, replay_ca.issuing]
    assert bootstrap_set(certs, fingerprint(replay_ca.issuing)) == [replay_ca.issuing, replay_ca.root]
    with pytest.raises(BootstrapError, match="no certificate"):
        bootstrap_set(certs[:1], fingerprint(replay_ca.root))


def test_bootstrap_fingerprint_of_a_leaf_is_refused(replay_ca):
    from kipuka.client import generate_key, CsrSpec
    from cryptography.hazmat.primitives import serialization
    leaf = replay_ca.issue(CsrSpec.for_names(generate_key(), "x").build().public_bytes(serialization.Encoding.DER))
    with pytest.raises(BootstrapError, match="not a CA certificate"):
        bootstrap_set([leaf, replay_ca.issuing], fingerprint(leaf))


def test_durations():
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("1d12h") == 36 * 3600
    assert parse_duration("90m") == 5400 and parse_duration("45s") == 45 and parse_duration("2w") == 14 * 86400
    assert parse_duration("30", bare_unit="d") == 30 * 86400 and parse_duration("30") == 30
    for bad in ("", "d", "30x", "1d junk"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_write_atomic_sets_the_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "k.pem"
    target.write_bytes(b"old")
    os.chmod(target, 0o666)
    old = os.umask(0)
    try:
        write_atomic(target, b"new", 0o600)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["k.pem"]
    with pytest.raises(EstError, match="cannot write"):
        write_atomic(tmp_path / "missing-dir" / "x", b"", 0o600)


def test_certs_only_from_pem_certificates(replay_ca):
    from cryptography.hazmat.primitives import serialization
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM).replace(b"\n", b"\r\n") for c in replay_ca.chain)
    assert wire.certificates(pem, "t") == replay_ca.chain
    assert wire.certificates(b64_lines(certs_only(replay_ca.chain)), "t")[0] in replay_ca.chain


def test_a_certificate_set_out_of_der_order_is_read_without_a_warning(replay_ca):
    """Other servers (and kipuka before issue #15) send the set in chain order, which is BER unless
    it happens to be the DER order: the client reads it, and cryptography's warning (an error in
    this test suite) stays inside the client."""
    from cryptography.hazmat.primitives import serialization
    unsorted = sorted(replay_ca.chain, key=lambda c: c.public_bytes(serialization.Encoding.DER), reverse=True)
    ber = der_strict.chain_ordered_certs_only(unsorted)
    with pytest.raises(der_strict.NotDer):
        der_strict.certs_only(ber)
    assert wire.certificates(b64_lines(ber), "t") == unsorted


def test_certificates_fall_back_to_a_ber_reader(replay_ca, monkeypatch):
    """Indefinite lengths, or a future cryptography that refuses non-DER SET ordering, still parse."""
    from pyasn1.codec.ber import decoder as ber_decoder, encoder as ber_encoder
    from pyasn1_modules import rfc5652
    ci, _ = ber_decoder.decode(certs_only(replay_ca.chain), asn1Spec=rfc5652.ContentInfo())
    indefinite = ber_encoder.encode(ci, defMode=False)
    assert indefinite[1] == 0x80  # indefinite length

    def strict(_der):
        raise ValueError("not DER")
    monkeypatch.setattr(wire.pkcs7, "load_der_pkcs7_certificates", strict)
    assert {c.serial_number for c in wire.certificates(b64_lines(indefinite), "t")} == \
        {c.serial_number for c in replay_ca.chain}
    with pytest.raises(InvalidResponse, match="not a certs-only PKCS#7: not DER"):
        wire.certificates(b64_lines(b"\x30\x03\x02\x01\x00"), "t")
