"""What the fuzz tests share: the example budget, byte mutations, DER trees, CSR builders.

The budget: every property runs `examples(n)` examples, n by default (CI: the
whole of tests/fuzz in well under a minute). KIPUKA_FUZZ_EXAMPLES=N sets every
property to N examples and lets Hypothesis pick fresh random inputs each run
(the CI run is derandomized, so it explores the same inputs every time and
cannot fail on a different machine for a different reason). See README.md.
"""

from __future__ import annotations

import base64
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kipuka.cmc import der

BY_HAND = "KIPUKA_FUZZ_EXAMPLES" in os.environ


def examples(default: int) -> int:
    return int(os.environ.get("KIPUKA_FUZZ_EXAMPLES", default))


def fuzz(default: int):  # type: ignore[no-untyped-def]
    """Hypothesis settings for one property: its example budget, no deadline (CI machines stall)."""
    return settings(max_examples=examples(default), deadline=None, derandomize=not BY_HAND, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


# --- byte-level mutation of a valid input --------------------------------------------

_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF, 0x30, 0x31, 0xA0, 0x04, 0x02, 0x05, 0x06, 0x0A,
                0x0D, 0x20, 0x2D, 0x3A, 0x3D]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of `seeds` with 1..4 flips, overwrites, insertions, deletions, truncations or length bytes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(_INTERESTING))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate" and data:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# --- DER --------------------------------------------------------------------------------

der_trees = st.recursive(
    st.builds(der.tlv, st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x16, 0x17, 0x80, 0x81]),
              st.binary(max_size=40)),
    lambda children: st.builds(lambda tag, parts: der.tlv(tag, b"".join(parts)),
                               st.sampled_from([0x30, 0x31, 0xA0, 0xA1, 0xA2, 0xA3]), st.lists(children, max_size=5)),
    max_leaves=30)


def deep_nesting(levels: int, indefinite: bool = False) -> bytes:
    """`levels` SEQUENCEs one inside the other: what recursive decoders choke on."""
    if indefinite:
        return b"\x30\x80" * levels + b"\x00\x00" * levels
    inner = b"\x05\x00"
    for _ in range(levels):
        inner = der.tlv(0x30, inner)
    return inner


hostile_der = st.one_of(
    st.binary(max_size=600),
    der_trees,
    st.integers(50, 3000).map(deep_nesting),
    st.integers(50, 3000).map(lambda n: deep_nesting(n, indefinite=True)),
    st.builds(lambda n: b"\x30\x84" + n.to_bytes(4, "big"), st.integers(0, 2**32 - 1)),  # a huge claimed length
)


# --- base64 the way clients in the field send it ----------------------------------------

@st.composite
def field_base64(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` as base64 with RFC 8951 whitespace anywhere: any wrapping, CR, LF, spaces, tabs."""
    text = base64.b64encode(data)
    out = bytearray()
    i = 0
    while i < len(text):
        n = draw(st.integers(1, 80))
        out += text[i:i + n]
        i += n
        out += draw(st.sampled_from([b"", b"\n", b"\r\n", b" ", b"\t", b"\r\n\t ", b"\n\n"]))
    return draw(st.sampled_from([b"", b"\n", b" \r\n"])) + bytes(out)


# --- CSRs -------------------------------------------------------------------------------

SIGNER = ec.generate_private_key(ec.SECP256R1())
_ECDSA_SHA256 = der.seq(der.oid("1.2.840.10045.4.3.2"))


def raw_csr(subject: bytes, attributes: list[tuple[str, list[bytes]]], key: ec.EllipticCurvePrivateKey = SIGNER,
            extra_info: bytes = b"") -> bytes:
    """A correctly signed PKCS#10 CSR whose attribute values are arbitrary DER (cryptography's builder
    only writes string values): the only way to reach attribute parsers past the signature check."""
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    attrs = b"".join(der.seq(der.oid(oid), der.tlv(0x31, b"".join(values))) for oid, values in attributes)
    info = der.seq(der.integer(0), subject, spki, der.tlv(0xA0, attrs), extra_info)
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    return der.seq(info, _ECDSA_SHA256, der.tlv(0x03, b"\x00" + signature))


def built_csr(subject: x509.Name, sans: list[x509.GeneralName], attributes: list[tuple[x509.ObjectIdentifier, bytes]],
              key: ec.EllipticCurvePrivateKey = SIGNER) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for oid, value in attributes:
        builder = builder.add_attribute(oid, value)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)
