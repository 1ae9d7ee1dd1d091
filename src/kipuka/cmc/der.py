"""Bounded BER/DER reading and a small DER writer.

Untrusted input goes through `check()` before pyasn1 sees it: one element
spanning the whole input, definite or (constructed only) indefinite lengths
that stay inside their parent, at most `max_depth` nested TLVs and at most
`max_elements` TLVs in all. pyasn1 decodes roughly 25,000 elements per second,
so the element budget is what bounds the CPU time of a hostile message, and the
depth bound keeps pyasn1's recursion shallow. Every failure is a
`CmcError(badRequest)`.

The writer emits DER only (definite lengths, SET OF sorted) for what this
package signs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ

from kipuka.cmc.errors import CMCFailInfo, CmcError, CmcLimitError

DEFAULT_MAX_TLV_DEPTH = 48
DEFAULT_MAX_ELEMENTS = 20_000


def bad(reason: str, body_part_ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badRequest, body_part_ids, reason)


class Budget:
    """How many more TLVs may be read, and how deep; shared across nested messages."""

    __slots__ = ("left", "max_depth")

    def __init__(self, max_elements: int = DEFAULT_MAX_ELEMENTS, max_depth: int = DEFAULT_MAX_TLV_DEPTH) -> None:
        self.left = max_elements
        self.max_depth = max_depth


def _header(data: bytes, pos: int, end: int) -> tuple[int, bool, int, int, int | None]:
    """(tag byte, constructed, tag number, content start, content length or None)."""
    if pos >= end:
        raise bad("truncated ASN.1 element")
    first = data[pos]
    pos += 1
    number = first & 0x1F
    if number == 0x1F:
        number = 0
        for i in range(5):
            if pos >= end:
                raise bad("truncated ASN.1 tag")
            b = data[pos]
            pos += 1
            if i == 0 and b == 0x80:
                raise bad("non-minimal ASN.1 tag")
            number = (number << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            raise bad("ASN.1 tag number too large")
    if pos >= end:
        raise bad("truncated ASN.1 length")
    lb = data[pos]
    pos += 1
    constructed = bool(first & 0x20)
    if lb < 0x80:
        length: int | None = lb
    elif lb == 0x80:
        if not constructed:
            raise bad("indefinite length on a primitive ASN.1 element")
        length = None
    else:
        n = lb & 0x7F
        if n > 4 or lb == 0xFF:
            raise bad("ASN.1 length too large")
        if pos + n > end:
            raise bad("truncated ASN.1 length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if length is not None and pos + length > end:
        raise bad("truncated ASN.1 element (length runs past the end of its container)")
    return first, constructed, number, pos, length


def _walk(data: bytes, pos: int, end: int, depth: int, budget: Budget) -> int:
    """Validate one element at `pos`; return the position just after it."""
    budget.left -= 1
    if budget.left < 0:
        raise CmcLimitError("too many ASN.1 elements")
    if depth > budget.max_depth:
        raise CmcLimitError("ASN.1 nesting too deep")
    first, constructed, _number, cpos, length = _header(data, pos, end)
    if first == 0 and length == 0:
        raise bad("unexpected end-of-contents marker")
    if not constructed:
        return cpos + length  # type: ignore[operator]
    if length is not None:
        cend = cpos + length
        while cpos < cend:
            cpos = _walk(data, cpos, cend, depth + 1, budget)
        return cend
    while True:  # indefinite length: children until end-of-contents
        if cpos + 2 <= end and data[cpos] == 0 and data[cpos + 1] == 0:
            return cpos + 2
        if cpos >= end:
            raise bad("truncated indefinite-length ASN.1 element")
        cpos = _walk(data, cpos, end, depth + 1, budget)


def check(data: bytes, budget: Budget | None = None) -> None:
    """Raise CmcError(badRequest) unless `data` is exactly one well-formed BER element."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise bad("expected bytes")
    data = bytes(data)
    if not data:
        raise bad("empty message")
    after = _walk(data, 0, len(data), 1, budget or Budget())
    if after != len(data):
        raise bad(f"{len(data) - after} trailing bytes after the ASN.1 element")


def children(element: bytes) -> list[bytes]:
    """The raw TLVs directly inside one constructed element (already `check`ed)."""
    first, constructed, _n, cpos, length = _header(element, 0, len(element))
    if not constructed:
        raise bad("expected a constructed ASN.1 element")
    out: list[bytes] = []
    end = len(element) if length is None else cpos + length
    while cpos < end:
        if length is None and element[cpos] == 0 and cpos + 1 < end and element[cpos + 1] == 0:
            break
        start = cpos
        cpos = _walk(element, cpos, end, 1, Budget(1 << 30, 1 << 30))
        out.append(element[start:cpos])
    return out


def definite(data: bytes) -> bytes:
    """`data` (already `check`ed) with every indefinite length made definite; unchanged if it has none.

    pyasn1 mis-reads some indefinite-length encodings (an explicitly tagged,
    indefinite constructed OCTET STRING inside an indefinite SEQUENCE, as
    `openssl cms -sign -stream` writes eContent), so BER input is normalised
    first. Definite-length elements without indefinite descendants keep their
    exact bytes (signed attributes are DER by rule and so are never touched).
    """
    if b"\x80" not in data:
        return data
    out, end = _definite(data, 0, len(data))
    return out if end == len(data) else data


def _definite(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    first, constructed, _n, cpos, length = _header(data, pos, end)
    if not constructed:
        stop = cpos + length  # type: ignore[operator]
        return data[pos:stop], stop
    parts: list[bytes] = []
    changed = length is None
    cend = end if length is None else cpos + length
    while cpos < cend:
        if length is None and data[cpos] == 0 and cpos + 1 < cend and data[cpos + 1] == 0:
            cpos += 2
            break
        start = cpos
        part, cpos = _definite(data, cpos, cend)
        changed = changed or len(part) != cpos - start
        parts.append(part)
    if not changed:
        return data[pos:cpos], cpos
    ident_end = pos + 1
    if first & 0x1F == 0x1F:        # high tag number: base-128 octets up to one without bit 8
        while data[ident_end] & 0x80:
            ident_end += 1
        ident_end += 1
    return data[pos:ident_end] + _len(sum(map(len, parts))) + b"".join(parts), cpos


def retag(element: bytes, tag_byte: int) -> bytes:
    """`element` with its (single-byte) identifier octet replaced: IMPLICIT [n] <-> universal."""
    if not element or element[0] & 0x1F == 0x1F:
        raise bad("cannot re-tag this ASN.1 element")
    return bytes([tag_byte]) + element[1:]


def decode(data: bytes, spec, what: str, body_part_ids: Iterable[int] = ()):
    """pyasn1-decode `data` as `spec`; anything wrong (incl. trailing bytes) is badRequest."""
    try:
        value, rest = ber_decoder.decode(bytes(data), asn1Spec=spec)
    except Exception as exc:  # pyasn1 raises PyAsn1Error and, on odd input, others
        raise bad(f"malformed {what}", body_part_ids) from exc
    if rest:
        raise bad(f"trailing bytes after {what}", body_part_ids)
    return value


def tag_of(element: bytes) -> int:
    return element[0] if element else -1


# ----------------------------------------------------------------------------- writer

def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def set_of(parts: Iterable[bytes]) -> bytes:
    """DER SET OF: elements sorted by their encodings (X.690 §11.6)."""
    return tlv(0x31, b"".join(sorted(parts)))


def explicit(n: int, inner: bytes) -> bytes:
    return tlv(0xA0 | n, inner)


def implicit(n: int, element: bytes, constructed: bool = True) -> bytes:
    return retag(element, (0xA0 if constructed else 0x80) | n)


def oid(dotted: str) -> bytes:
    return der_encoder.encode(univ.ObjectIdentifier(dotted))


def integer(n: int) -> bytes:
    return der_encoder.encode(univ.Integer(int(n)))


def octets(b: bytes) -> bytes:
    return tlv(0x04, bytes(b))


def utf8(s: str) -> bytes:
    return tlv(0x0C, s.encode("utf-8"))


def null() -> bytes:
    return b"\x05\x00"


def boolean(v: bool) -> bytes:
    return b"\x01\x01\xff" if v else b"\x01\x01\x00"


def bit_string(b: bytes, unused: int = 0) -> bytes:
    return tlv(0x03, bytes([unused]) + bytes(b))


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)


def generalized_time(t: dt.datetime) -> bytes:
    return tlv(0x18, _utc(t).strftime("%Y%m%d%H%M%SZ").encode())


def utc_time(t: dt.datetime) -> bytes:
    return tlv(0x17, _utc(t).strftime("%y%m%d%H%M%SZ").encode())


def cms_time(t: dt.datetime) -> bytes:
    """Time ::= CHOICE { utcTime, generalTime }: UTCTime for 1950..2049 (RFC 5652 §11.3)."""
    t = _utc(t)
    return utc_time(t) if 1950 <= t.year < 2050 else generalized_time(t)


def algorithm(dotted: str, params: bytes | None = None) -> bytes:
    return seq(oid(dotted), params or b"")
