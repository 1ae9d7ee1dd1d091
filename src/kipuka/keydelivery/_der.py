"""Small DER helpers shared by the builders and readers of this package.

Decoding is bounded (size and trailing bytes) because the readers also serve a
client that takes CMS from the network; encoding goes through pyasn1's DER
encoder, with a few hand-built TLVs where pyasn1 would re-encode bytes that
must be copied verbatim (certificates, names).
"""

from __future__ import annotations

from typing import Any

from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc5280

# A key package is a few kB (RSA-16384 PKCS#8 is about 9.5 kB) and a signer chain a
# few more; 256 kB leaves room for long chains while refusing absurd input early.
MAX_CMS_BYTES = 256 * 1024


class KeyDeliveryError(ValueError):
    """A structure does not parse, does not verify, or cannot be decrypted."""


def check_size(data: bytes, what: str, limit: int = MAX_CMS_BYTES) -> None:
    """Refuse oversized input before any parser sees it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise KeyDeliveryError(f"{what} is {len(data)} bytes; the limit is {limit}")
    if not data:
        raise KeyDeliveryError(f"{what} is empty")


def decode(data: bytes, spec: Any, what: str, limit: int = MAX_CMS_BYTES) -> Any:
    """Decode exactly one value of `spec`; no trailing bytes.

    BER, of which DER is a subset: CMS from other implementations may use
    indefinite lengths (streaming encoders), and OpenSSL and Bouncy Castle read it.
    """
    check_size(data, what, limit)
    try:
        value, rest = ber_decoder.decode(bytes(data), asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise KeyDeliveryError(f"{what} does not parse: {first}") from None
    if rest:
        raise KeyDeliveryError(f"{what}: {len(rest)} trailing bytes")
    return value


def encode(value: Any) -> bytes:
    """DER encoding of a pyasn1 value."""
    return der_encoder.encode(value)


def tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a definite length."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def oid(dotted: str) -> univ.ObjectIdentifier:
    """A pyasn1 OID from a dotted string."""
    return univ.ObjectIdentifier(dotted)


def algorithm_identifier(dotted: str, parameters: bytes | None = None) -> rfc5280.AlgorithmIdentifier:
    """AlgorithmIdentifier with DER `parameters` (None: absent, as RFC 5754/3565 ask for SHA-2/AES)."""
    alg = rfc5280.AlgorithmIdentifier()
    alg["algorithm"] = oid(dotted)
    if parameters is not None:
        alg["parameters"] = univ.Any(parameters)
    return alg


DER_NULL = b"\x05\x00"


def split_tlv(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """(tag byte, start of contents, end of contents) of the DER TLV at `offset`.

    Low-tag-number form and definite lengths only: that is all DER CMS needs, and
    refusing the rest keeps this reader small. Used where the exact bytes matter
    (signed attributes, names as they appear in a certificate).
    """
    n = len(data)
    if offset + 2 > n:
        raise KeyDeliveryError("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise KeyDeliveryError("DER: high tag numbers are not supported here")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise KeyDeliveryError("DER: indefinite length")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > n:
            raise KeyDeliveryError("DER: bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > n:
        raise KeyDeliveryError("truncated DER")
    return tag, pos, end


def children(data: bytes) -> list[bytes]:
    """The complete TLVs inside the single constructed TLV `data`."""
    tag, start, end = split_tlv(data)
    if not tag & 0x20:
        raise KeyDeliveryError("DER: expected a constructed value")
    if end != len(data):
        raise KeyDeliveryError("DER: trailing bytes")
    out = []
    pos = start
    while pos < end:
        _, _, child_end = split_tlv(data, pos)
        if child_end > end:
            raise KeyDeliveryError("DER: child overruns its parent")
        out.append(bytes(data[pos:child_end]))
        pos = child_end
    return out
