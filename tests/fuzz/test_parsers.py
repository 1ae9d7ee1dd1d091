"""Layer (a): every parser that sees client (or server) bytes, called directly with hostile input.

Each property states what a parser may do with anything at all: return, or raise
the one error type its callers turn into a 4xx (kipuka.errors.BadRequest and
friends on the server, InvalidResponse in the client). Anything else would be a
500 or a crashed client. Sizes are bounded, so a hang shows as a slow test.
Round trips check that the tolerant readers accept what the writers (ours and
other clients') produce. The CMC parser has its own fuzzing in
tests/unit/test_cmc.py and tests/test_fullcmc.py; only the body decoder in front
of it is here.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import AttributeOID, NameOID
from hypothesis import assume, example, given, reject
from hypothesis import strategies as st

from kipuka.client import wire
from kipuka.client.errors import EstError, InvalidResponse
from kipuka.cmc import der
from kipuka.config import RateLimitConfig, Policy
from kipuka.errors import BadRequest, Unauthenticated
from kipuka.est import codec
from kipuka.est import fullcmc as est_fullcmc
from kipuka.est.csrattrs import csrattrs_for
from kipuka.est.identity import MAX_ENTITY, MAX_SECRET, basic_credentials
from kipuka.keydelivery.multipart import MultipartError, multipart_mixed, parse_media_type, parse_multipart_mixed
from kipuka.server.limits import client_key
from kipuka.server.proxy import MAX_HEADER, SIGNATURE, ProxyHeaderError, parse_v2
from kipuka.server.ratelimit import RateLimiter
from tests.fuzz.common import (SIGNER, built_csr, deep_nesting, der_trees, field_base64, fuzz, hostile_der, mutated,
                               raw_csr)
from tests.fuzz.targets import check_csr

# cryptography warns about (and keeps) a subject attribute of a length X.520 does not allow
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")


def policy(**changes: object) -> Policy:
    """A Policy with the given keys, skipping any this version of kipuka does not have."""
    known = {f.name for f in dataclasses.fields(Policy)}
    return dataclasses.replace(Policy(), **{k: v for k, v in changes.items() if k in known})


# ===================================================================== base64 bodies (RFC 8951)

@fuzz(300)
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.binary(max_size=300).map(base64.b64encode).flatmap(lambda b: mutated([b or b"A"])),
                      st.binary(max_size=200).map(lambda d: b"-----BEGIN CERTIFICATE REQUEST-----\n"
                                                  + base64.b64encode(d) + b"\n-----END CERTIFICATE REQUEST-----\n")
                      .flatmap(lambda b: mutated([b]))))
def test_body_decoder_raises_only_bad_request(body: bytes) -> None:
    for decode in (codec.decode_body, est_fullcmc.decode):
        try:
            out = decode(body)
        except BadRequest:
            continue
        assert isinstance(out, bytes) and out


@fuzz(200)
@given(data=st.data(), der_body=st.binary(min_size=1, max_size=600).map(lambda b: b"\x30" + bytes([min(len(b), 127)])
                                                                         + b[:127]))
def test_body_decoder_accepts_any_rfc8951_whitespace(data: st.DataObject, der_body: bytes) -> None:
    """Base64 wrapped anywhere with CR, LF, space or tab, with or without PEM armour, decodes exactly."""
    text = data.draw(field_base64(der_body))
    assert codec.decode_body(text) == der_body
    armoured = b"-----BEGIN CERTIFICATE REQUEST-----\r\n" + text + b"\r\n-----END CERTIFICATE REQUEST-----\r\n"
    assert codec.decode_body(armoured) == der_body


# ===================================================================== CSRs (ra/csr.py and the CSR attribute readers)

def _seed_csrs() -> list[bytes]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1.example.com")])
    sans = [x509.DNSName("device-1.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    seeds = [
        built_csr(name, sans, []),
        built_csr(name, [], [(AttributeOID.CHALLENGE_PASSWORD, b"c2VjcmV0IGJpbmRpbmc=")]),
        built_csr(x509.Name([]), [x509.RFC822Name("a@example.com")], [], ed25519.Ed25519PrivateKey.generate()),
        raw_csr(name.public_bytes(), [
            ("1.2.840.113549.1.9.16.2.37", [der.octets(b"kek-1")]),
            ("1.2.840.113549.1.9.15", [der.seq(der.seq(der.oid("2.16.840.1.101.3.4.1.42")))])]),
        raw_csr(name.public_bytes(), [("1.3.6.1.5.5.7.7.36", [der.seq(name.public_bytes())])]),
    ]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    seeds.append(built_csr(name, sans, [], rsa_key))
    return seeds


SEED_CSRS = _seed_csrs()
POLICIES = [
    Policy(),
    policy(key_types=("ec-p256",), san_types=("dns",), dns_suffixes=("example.com",), otp_name_rule="exact"),
    policy(require_linking=True, require_common_name=False, key_types=("ed25519", "ec-p256"), otp_name_rule="any"),
    policy(require_san=True, subject_rdns=("O=Example Corp", "OU"), san_types=("dns", "ip", "email", "uri")),
]
ATTRIBUTE_OIDS = ["1.3.6.1.5.5.7.7.36", "1.2.840.113549.1.9.16.2.37", "1.2.840.113549.1.9.16.2.54",
                  "1.2.840.113549.1.9.15", "1.2.840.113549.1.9.7", "1.2.840.113549.1.9.14", "1.2.3.4"]
NAME_OIDS = [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.SERIAL_NUMBER,
             NameOID.DOMAIN_COMPONENT, NameOID.EMAIL_ADDRESS, NameOID.USER_ID, x509.ObjectIdentifier("1.2.3.4.5")]
_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)
_ascii = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)
general_names = st.one_of(  # (constructor, value): built inside named_csrs, where a refusal is caught
    st.tuples(st.just(x509.DNSName), _ascii | st.sampled_from(["device-1.example.com", "*.example.com", "a..b",
                                                                "-x.example.com", "device-1.example.com."])),
    st.tuples(st.just(x509.IPAddress), st.ip_addresses()),
    st.tuples(st.sampled_from([x509.RFC822Name, x509.UniformResourceIdentifier]), _ascii),
    st.tuples(st.just(x509.RegisteredID), st.just(x509.ObjectIdentifier("1.2.3.4"))),
    st.tuples(st.just(x509.DirectoryName), st.just(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))),
    st.tuples(st.just(lambda b: x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), der.tlv(0x0C, b))),
              st.binary(max_size=20)),
)


@st.composite
def named_csrs(draw: st.DrawFn) -> bytes:
    """Validly signed CSRs with odd subjects, names and string attributes: these get past parsing
    and proof of possession, into the name checks."""
    attrs = draw(st.lists(st.tuples(st.sampled_from(NAME_OIDS), _text), max_size=5))
    sans = draw(st.lists(general_names, max_size=5))
    password = draw(st.none() | st.binary(max_size=80))
    try:
        subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])
        attributes = [(AttributeOID.CHALLENGE_PASSWORD, password)] if password is not None else []
        return built_csr(subject, [make(value) for make, value in sans], attributes)
    except (ValueError, TypeError, UnicodeError):
        reject()


@st.composite
def attribute_csrs(draw: st.DrawFn) -> bytes:
    """Validly signed CSRs whose attribute values are arbitrary DER, for the pyasn1 attribute readers."""
    attributes = draw(st.lists(st.tuples(st.sampled_from(ATTRIBUTE_OIDS), st.lists(hostile_der, max_size=2)),
                               min_size=1, max_size=3))
    subject = draw(st.sampled_from([x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")]).public_bytes(),
                                    der.seq(),  # an empty subject, then a CN of length 0
                                    der.seq(der.tlv(0x31, der.seq(der.oid("2.5.4.3"), der.tlv(0x0C, b""))))]))
    return raw_csr(subject, attributes)


Binding = tuple[str, bytes] | None
bindings = st.none() | st.tuples(st.sampled_from(["tls-unique", "tls-exporter"]), st.binary(min_size=12, max_size=32))


@fuzz(300)
@given(der_csr=st.one_of(mutated(SEED_CSRS), hostile_der), pol=st.sampled_from(POLICIES), binding=bindings)
def test_hostile_csr_bytes_get_only_400_or_403(der_csr: bytes, pol: Policy, binding: Binding) -> None:
    check_csr(der_csr, pol, binding)


@fuzz(150)
@given(der_csr=named_csrs(), pol=st.sampled_from(POLICIES), binding=bindings)
def test_signed_csrs_with_odd_names_get_only_400_or_403(der_csr: bytes, pol: Policy, binding: Binding) -> None:
    check_csr(der_csr, pol, binding)


@fuzz(150)
@given(der_csr=attribute_csrs(), pol=st.sampled_from(POLICIES))
def test_signed_csrs_with_hostile_attributes_get_only_400(der_csr: bytes, pol: Policy) -> None:
    check_csr(der_csr, pol, None)


def test_a_deeply_nested_change_subject_name_is_a_400() -> None:
    """Thousands of nested SEQUENCEs in a (validly signed) attribute value: a recursion bomb for
    schema-less decoders."""
    for levels in (500, 5000):
        csr = raw_csr(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")]).public_bytes(),
                      [("1.3.6.1.5.5.7.7.36", [deep_nesting(levels)])])
        assert len(csr) < 65536
        check_csr(csr, Policy(), None)


# ===================================================================== CsrAttrs (server encoder, client parser)

KEY_TYPES = ["ec-p256", "ec-p384", "ec-p521", "rsa", "ed25519"]
_RDNS = [(), ("OU",), ("O=Example Corp",), ("C=NZ", "CN")]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    template = draw(st.booleans())
    return policy(
        key_types=tuple(draw(st.lists(st.sampled_from(KEY_TYPES), min_size=1, max_size=5, unique=True))),
        san_types=tuple(draw(st.lists(st.sampled_from(["dns", "ip", "email", "uri"]), max_size=4, unique=True))),
        require_linking=not template and draw(st.booleans()),
        csrattrs=draw(st.booleans()), rsa_min_bits=draw(st.sampled_from([2048, 3072, 4096])),
        csr_template=template, require_san=draw(st.booleans()), subject_rdns=draw(st.sampled_from(_RDNS)))


@fuzz(150)
@given(pol=policies())
def test_client_reads_every_csrattrs_the_server_writes(pol: Policy) -> None:
    der_attrs = csrattrs_for(pol)
    if der_attrs is None:
        assert not pol.csrattrs and not pol.require_linking
        return
    attrs = wire.csr_attributes(der_attrs)
    allowed = {"rsa" if k == "rsa" else k for k in pol.key_types}
    assert set(attrs.key_types()) <= allowed
    assert attrs.wants_challenge_password == pol.require_linking
    # what the client sends back over the wire decodes again
    assert wire.csr_attributes(wire.decode_body(codec.encode_body(der_attrs), "csrattrs")).der == der_attrs


_SEED_ATTRS = [a for a in (csrattrs_for(Policy()), csrattrs_for(policy(require_linking=True, key_types=("ed25519",))),
                           csrattrs_for(policy(csr_template=True, require_san=True, subject_rdns=("OU",))))
               if a is not None]


@fuzz(300)
@given(blob=st.one_of(mutated(_SEED_ATTRS), hostile_der))
def test_client_csrattrs_parser_raises_only_invalid_response(blob: bytes) -> None:
    try:
        attrs = wire.csr_attributes(blob)
    except InvalidResponse:
        return
    attrs.key_types(), attrs.key_type(), attrs.signature_hash(), attrs.extension_requests, attrs.to_json()


# ===================================================================== multipart (server writer/reader, client reader)

_CTYPES = ["application/pkcs8", "application/pkcs7-mime; smime-type=certs-only",
           "application/pkcs7-mime; smime-type=server-generated-key"]
boundaries = st.text(st.sampled_from("0123456789AZaz'()+_,-./:=?"), min_size=1, max_size=70)


@fuzz(150)
@given(parts=st.lists(st.tuples(st.sampled_from(_CTYPES), st.binary(max_size=300)), min_size=1, max_size=4),
       boundary=st.none() | boundaries)
def test_multipart_round_trips_through_server_and_client_readers(parts: list[tuple[str, bytes]],
                                                                  boundary: str | None) -> None:
    ctype, body = multipart_mixed(parts, boundary)
    assert parse_multipart_mixed(ctype, body) == parts
    assert parse_multipart_mixed(ctype, body, strict=False) == parts
    read = wire.multipart(body, wire.parse_media_type(ctype))
    assert [(p.headers["content-type"], wire.decode_body(p.body, "part") if p.body else b"") for p in read] == \
        [(t, d) for t, d in parts]


_SEED_MULTIPART = [multipart_mixed([("application/pkcs8", b"\x30\x03\x02\x01\x00"),
                                    ("application/pkcs7-mime; smime-type=certs-only", b"\x30\x00" * 40)],
                                   "kipuka-boundary")[1]]
multipart_bodies = st.one_of(
    mutated(_SEED_MULTIPART), st.binary(max_size=500),
    st.lists(st.sampled_from([b"--kipuka-boundary", b"--kipuka-boundary--", b"\r\n", b"\n", b"Content-Type: x",
                              b"Content-Transfer-Encoding: base64", b"AAAA", b":", b" ", b"\t", b"=", b"--"]),
             max_size=30).map(b"".join))
media_types = st.one_of(
    st.just("multipart/mixed; boundary=kipuka-boundary"), st.just('multipart/mixed; boundary="kipuka-boundary"'),
    st.text(max_size=120), st.builds(lambda b: f'multipart/mixed; boundary="{b}"', st.text(max_size=80)),
    st.just("multipart/mixed; boundary=kipuka-boundary; boundary=x"),
    st.just('multipart/mixed; boundary="unterminated'))


@fuzz(300)
@given(ctype=media_types, body=multipart_bodies, strict=st.booleans())
def test_multipart_readers_raise_only_their_own_errors(ctype: str, body: bytes, strict: bool) -> None:
    try:
        for part_type, data in parse_multipart_mixed(ctype, body, strict=strict):
            assert isinstance(part_type, str) and isinstance(data, bytes)
    except MultipartError:
        pass
    try:
        for part in wire.multipart(body, wire.parse_media_type(ctype)):
            part.media, part.transfer_encoding
    except InvalidResponse:
        pass


@fuzz(300)
@given(value=st.one_of(st.text(max_size=200), media_types))
def test_media_type_parsers_never_fail_unexpectedly(value: str) -> None:
    try:
        mtype, params = parse_media_type(value)
        assert mtype == mtype.lower()
    except MultipartError:
        pass
    parsed = wire.parse_media_type(value)
    wire.is_certs_media(parsed), parsed.smime_type, str(parsed)
    assert est_fullcmc._media_type_problem(value) is None or isinstance(est_fullcmc._media_type_problem(value), str)


@pytest.mark.parametrize("value", ["application/pkcs7-mime; smime-type=CMC-request",
                                   'application/pkcs7-mime;smime-type="cmc-request"',
                                   "Application/PKCS7-MIME; Smime-Type=CMC-Request", "application/x-pkcs7-mime"])
def test_cmc_content_type_variants_are_accepted(value: str) -> None:
    assert est_fullcmc._media_type_problem(value) is None


# ===================================================================== HTTP headers: Authorization, PROXY, client-side

entities = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=":"), min_size=1,
                   max_size=MAX_ENTITY)
secrets_ = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=MAX_SECRET)


@fuzz(300)
@given(header=st.one_of(st.text(max_size=1200),
                        st.binary(max_size=300).map(lambda b: "Basic " + base64.b64encode(b).decode()),
                        st.binary(max_size=200).map(lambda b: "Basic " + b.decode("latin-1"))))
def test_basic_credentials_raise_only_401(header: str) -> None:
    try:
        creds = basic_credentials(header)
    except Unauthenticated:
        return
    assert creds is not None and creds.entity and creds.secret and ":" not in creds.entity


@fuzz(200)
@given(entity=entities, secret=secrets_, scheme=st.sampled_from(["Basic", "basic", "BASIC"]),
       pad=st.sampled_from(["", " ", "  "]))
def test_basic_credentials_round_trip(entity: str, secret: str, scheme: str, pad: str) -> None:
    token = base64.b64encode(f"{entity}:{secret}".encode()).decode()
    header = f"{pad}{scheme} {token}{pad}"
    assume(len(header) <= 1024)
    creds = basic_credentials(header)
    assert (creds.entity, creds.secret) == (entity, secret)


def proxy_header(source: str, sport: int, dest: str, dport: int, tlvs: bytes = b"") -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(dest)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


@st.composite
def proxy_headers(draw: st.DrawFn) -> tuple[bytes, str, int]:
    v6 = draw(st.booleans())
    source = str(draw(st.ip_addresses(v=6 if v6 else 4)))
    dest = str(draw(st.ip_addresses(v=6 if v6 else 4)))
    sport = draw(st.integers(0, 65535))
    tlvs = draw(st.binary(max_size=200))
    return proxy_header(source, sport, dest, 443, tlvs), source, sport


@fuzz(200)
@given(header=proxy_headers(), tail=st.binary(max_size=40))
def test_proxy_v2_header_round_trip(header: tuple[bytes, str, int], tail: bytes) -> None:
    data, source, sport = header
    length, found = parse_v2(data + tail)
    assert length == len(data) and found == (source, sport)


@fuzz(300)
@given(data=st.one_of(st.binary(max_size=700), st.builds(lambda b: SIGNATURE + b, st.binary(max_size=700)),
                      mutated([proxy_header("203.0.113.7", 40000, "127.0.0.1", 9443),
                               proxy_header("2001:db8::1", 1, "2001:db8::2", 9443, b"\x03\x00\x04abcd")])))
def test_proxy_v2_parser_raises_only_proxy_header_error(data: bytes) -> None:
    try:
        length, source = parse_v2(data)
    except ProxyHeaderError:
        return
    assert 16 <= length <= MAX_HEADER
    if source is not None:
        ipaddress.ip_address(source[0])
        assert 0 <= source[1] <= 65535


@fuzz(300)
@given(value=st.one_of(st.none(), st.text(max_size=60), st.integers(-10, 10**12).map(str),
                       st.text(st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=4),
                       st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))))
def test_client_retry_after_never_fails(value: str | None) -> None:
    seconds = wire.retry_after(value)
    assert seconds is None or (isinstance(seconds, int) and seconds >= 0)


@fuzz(300)
@given(body=st.one_of(st.binary(max_size=1000), st.text(max_size=300).map(str.encode)),
       ctype=st.one_of(st.none(), st.sampled_from(["text/plain", "application/json", "application/problem+json",
                                                   "text/html", "text/html; charset=utf-8"]), st.text(max_size=40)))
def test_client_error_reason_is_one_bounded_line(body: bytes, ctype: str | None) -> None:
    line = wire.error_reason(body, ctype, "HTTP 400")
    assert isinstance(line, str) and "\n" not in line and len(line) <= wire.MAX_REASON


@fuzz(300)
@given(body=st.one_of(hostile_der,
                      st.binary(max_size=500).map(base64.b64encode).flatmap(lambda b: mutated([b or b"A"])),
                      st.builds(lambda d: b"-----BEGIN PKCS7-----\n" + base64.b64encode(d) + b"\n-----END PKCS7-----",
                                der_trees)),
       cte=st.sampled_from([None, "base64", "binary", "BINARY"]))
def test_client_body_readers_raise_only_invalid_response(body: bytes, cte: str | None) -> None:
    try:
        assert wire.decode_body(body, "cacerts", cte)
    except InvalidResponse:
        pass
    try:
        assert wire.certificates(body, "cacerts", cte)
    except InvalidResponse:
        pass


@fuzz(150)
@given(blob=hostile_der)
@example(blob=b"\xf7\x80" + b"\x00" * 16)  # found by atheris: an end-of-contents marker decodes to no value
@example(blob=b"")  # pyasn1's end-of-stream error has no message
def test_client_server_generated_key_reader_raises_only_est_errors(blob: bytes) -> None:
    from kipuka.client.cms import open_server_generated_key
    try:
        open_server_generated_key(blob, private_key=SIGNER)
    except EstError:
        pass


# ===================================================================== the limits' own address handling

@fuzz(300)
@given(address=st.one_of(st.text(max_size=80), st.ip_addresses().map(str)))
def test_client_key_never_fails(address: str) -> None:
    assert isinstance(client_key(address), str)


@fuzz(100)
@given(prefix=st.ip_addresses(v=6), low=st.integers(0, 2**64 - 1), low2=st.integers(0, 2**64 - 1))
def test_an_ipv6_client_counts_by_its_64(prefix: ipaddress.IPv6Address, low: int, low2: int) -> None:
    assume(prefix.ipv4_mapped is None)
    base = int(prefix) >> 64 << 64
    a, b = ipaddress.IPv6Address(base | low), ipaddress.IPv6Address(base | low2)
    assume(a.ipv4_mapped is None and b.ipv4_mapped is None)
    assert client_key(str(a)) == client_key(str(b))
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@fuzz(200)
@given(rate=st.integers(1, 50), burst=st.integers(1, 100),
       gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=300))
def test_token_bucket_never_lets_more_than_burst_plus_rate_times_time(rate: int, burst: int, gaps: list[float]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(lambda: RateLimitConfig(rate=rate, burst=burst), clock=clock)
    allowed, start = 0, clock.now
    for gap in gaps:
        clock.now += gap
        if limiter.wait_time("192.0.2.1") == 0:
            limiter.charge("192.0.2.1")
            allowed += 1
        else:  # the wait it announces is enough, and not much more than needed
            wait = limiter.wait_time("192.0.2.1")
            assert 0 < wait <= 1 / rate + 1e-9
    assert allowed <= burst + rate * (clock.now - start) + 1e-6
    assert limiter.wait_time("192.0.2.99") == 0  # another client is not affected


def test_the_rate_limiter_keeps_a_bounded_number_of_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    from kipuka.server import ratelimit
    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 100)
    clock = FakeClock()
    limiter = RateLimiter(lambda: RateLimitConfig(rate=1, burst=3), clock=clock)
    for i in range(1000):  # an attacker rotating through addresses
        limiter.charge(f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.001
    assert len(limiter._buckets) <= 100
    limiter.charge("192.0.2.1")
    assert limiter.wait_time("192.0.2.1") == 0  # a newcomer still gets its own full bucket
