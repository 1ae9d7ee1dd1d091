"""The strict DER check the wire tests rely on (tests/der_strict.py) can fail, and fails on BER.

pyasn1's DER decoder alone accepts an unsorted SET OF and a long-form length, so the
check re-encodes with pyasn1's DER encoder and compares bytes; cryptography reads an
unsorted certificate set only with a warning, which pyproject.toml makes an error.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.type import univ

from kipuka.est import codec
from tests import der_strict


class Integers(univ.SetOf):
    componentType = univ.Integer()


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


def _cert(cn: str, issuer: tuple[x509.Certificate, object] | None = None) -> tuple[x509.Certificate, object]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer[0].subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(issuer[1] if issuer else key, hashes.SHA256()))
    return cert, key


def test_pyasn1s_der_decoder_alone_accepts_an_unsorted_set_of_and_a_long_length():
    unsorted = _tlv(0x31, _tlv(0x02, b"\x05") + _tlv(0x02, b"\x03"))
    value, rest = der_decoder.decode(unsorted, asn1Spec=Integers())
    assert [int(v) for v in value] == [5, 3] and not rest
    long_length = b"\x31\x81\x03" + _tlv(0x02, b"\x03")
    assert der_decoder.decode(long_length, asn1Spec=Integers())[0]


def test_the_strict_check_refuses_what_the_decoder_lets_through():
    with pytest.raises(der_strict.NotDer, match="not DER"):
        der_strict.assert_der(_tlv(0x31, _tlv(0x02, b"\x05") + _tlv(0x02, b"\x03")), Integers(), "SET OF")
    with pytest.raises(der_strict.NotDer, match="not DER"):
        der_strict.assert_der(b"\x31\x81\x03" + _tlv(0x02, b"\x03"), Integers(), "SET OF")
    assert [int(v) for v in der_strict.assert_der(_tlv(0x31, _tlv(0x02, b"\x03") + _tlv(0x02, b"\x05")),
                                                  Integers(), "SET OF")] == [3, 5]


def test_a_chain_ordered_certificate_set_is_ber_and_fails_both_checks():
    root = _cert("root")
    issuing = _cert("an issuing CA with a longer name", root)
    chain = [issuing[0], root[0]]
    ordered = der_strict.chain_ordered_certs_only(chain)
    der = codec.certs_only(chain)
    assert ordered != der  # the chain order is not the DER order here
    with pytest.raises(der_strict.NotDer, match="not DER"):
        der_strict.certs_only(ordered)
    with pytest.raises(UserWarning, match="could not be parsed as DER"):  # pyproject: this warning is an error
        pkcs7.load_der_pkcs7_certificates(ordered)
    assert set(der_strict.certs_only(der)) == set(chain)
    assert pkcs7.load_der_pkcs7_certificates(der) == der_strict.certs_only(der)
