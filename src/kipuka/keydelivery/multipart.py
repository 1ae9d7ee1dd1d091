"""The /serverkeygen response body: multipart/mixed (RFC 2046 5.1) with base64 parts.

RFC 7030 4.4.2 returns the key and the certificate as two parts, each with
`Content-Transfer-Encoding: base64`. The writer emits one exact shape, because
clients differ in what they forgive: CRLF everywhere in the MIME structure,
base64 wrapped at 64 columns, no preamble, and the closing delimiter followed
by exactly one CRLF (Bouncy Castle's parser fails on more). The reader checks
that shape strictly by default; `strict=False` accepts what other servers send
(LF line ends, a preamble or epilogue, transport padding, no CTE header).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

from kipuka.keydelivery._der import KeyDeliveryError

MULTIPART_MIXED = "multipart/mixed"
MAX_BODY_BYTES = 1024 * 1024
MAX_PARTS = 8
MAX_HEADER_LINES = 16
MAX_LINE = 998  # RFC 5322 2.1.1

# RFC 2046 5.1.1: bchars, at most 70, not ending in a space. Spaces are refused here.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
_BOUNDARY_ANY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


class MultipartError(KeyDeliveryError):
    """A multipart body or its Content-Type is not in the expected form."""


def _b64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n".join(text[i:i + 64] for i in range(0, len(text), 64))


def multipart_mixed(parts: list[tuple[str, bytes]], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type header value, body) of a multipart/mixed with one base64 part per (type, bytes).

    A random boundary is made when none is given; the boundary is alphanumeric
    unless the caller chooses otherwise, so the header needs no quoting.
    """
    if not parts:
        raise ValueError("a multipart body needs at least one part")
    if boundary is None:
        boundary = "kipuka-" + secrets.token_hex(16)
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError("boundary must be 1..70 of RFC 2046 bchars, without spaces")
    delimiter = b"--" + boundary.encode("ascii")
    out = bytearray()
    for ctype, data in parts:
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("part bodies are bytes")
        if not _HEADER_VALUE.fullmatch(ctype):
            raise ValueError(f"part Content-Type {ctype!r} is not one printable ASCII line")
        encoded = _b64_lines(bytes(data))
        out += delimiter + b"\r\n"
        out += b"Content-Type: " + ctype.encode("ascii") + b"\r\n"
        out += b"Content-Transfer-Encoding: base64\r\n\r\n"
        out += encoded + b"\r\n"
    out += delimiter + b"--\r\n"
    quoted = boundary if _TOKEN.fullmatch(boundary) else '"' + boundary + '"'
    return f"{MULTIPART_MIXED}; boundary={quoted}", bytes(out)


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """(lower-case type/subtype, parameters with lower-case names) of a Content-Type value."""
    if len(value) > MAX_LINE:
        raise MultipartError("Content-Type is too long")
    mtype, _, rest = value.partition(";")
    mtype = mtype.strip().lower()
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise MultipartError(f"Content-Type parameter without a value: {rest[i:]!r}")
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            chars = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise MultipartError("Content-Type has an unterminated quoted string")
            i += 1
            val = "".join(chars)
        else:
            end = rest.find(";", i)
            end = n if end < 0 else end
            val = rest[i:end].strip()
            i = end
        if name in params:
            raise MultipartError(f"Content-Type repeats the parameter {name!r}")
        params[name] = val
    return mtype, params


def _headers(block: bytes, eol: bytes, strict: bool) -> dict[str, str]:
    lines = block.split(eol) if block else []
    if len(lines) > MAX_HEADER_LINES:
        raise MultipartError("a part has too many header lines")
    headers: dict[str, str] = {}
    for raw in lines:
        if len(raw) > MAX_LINE:
            raise MultipartError("a part header line is too long")
        if raw[:1] in (b" ", b"\t"):
            raise MultipartError("folded part headers are not supported")
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise MultipartError("a part header is not ASCII") from None
        if not strict:
            line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        key = name.lower()
        if key in headers:
            raise MultipartError(f"a part repeats the header {name}")
        headers[key] = value.strip()
    return headers


def _decode_base64(content: bytes, eol: bytes, strict: bool) -> bytes:
    if strict:
        for line in content.split(eol):
            if len(line) > 76 or not _B64_LINE.fullmatch(line):
                raise MultipartError("a part body is not base64 in lines of at most 76 characters")
        compact = content.replace(eol, b"")
    else:
        compact = re.sub(rb"[\r\n\t ]+", b"", content)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise MultipartError("a part body is not valid base64") from None


def parse_multipart_mixed(
    content_type: str,
    body: bytes,
    *,
    strict: bool = True,
    max_parts: int = MAX_PARTS,
    max_body: int = MAX_BODY_BYTES,
) -> list[tuple[str, bytes]]:
    """[(part Content-Type, decoded bytes)] of a multipart/mixed body with base64 parts.

    Strict mode accepts exactly what multipart_mixed writes (and what RFC 7030
    clients can rely on): CRLF line ends, no preamble, `Content-Transfer-Encoding:
    base64` on every part, and nothing but one CRLF after the closing delimiter.
    """
    if len(body) > max_body:
        raise MultipartError(f"multipart body is larger than {max_body} bytes")
    mtype, params = parse_media_type(content_type)
    if mtype != MULTIPART_MIXED:
        raise MultipartError(f"expected {MULTIPART_MIXED}, got {mtype or 'no media type'}")
    boundary = params.get("boundary", "")
    if not (_BOUNDARY if strict else _BOUNDARY_ANY).fullmatch(boundary):
        raise MultipartError("multipart/mixed without a valid boundary parameter")
    delimiter = b"--" + boundary.encode("ascii")
    body = bytes(body)
    eol = b"\r\n"
    if strict and _BARE_EOL.search(body):
        raise MultipartError("a bare CR or LF: MIME lines end in CRLF")
    if not strict and not body.startswith(delimiter + b"\r\n") and b"\r\n" not in body:
        eol = b"\n"  # a body written with LF only
    chunks = (eol + body).split(eol + delimiter)
    preamble, chunks = chunks[0], chunks[1:]
    if not chunks:
        raise MultipartError("multipart body contains no delimiter")
    if strict and preamble:
        raise MultipartError("multipart body has a preamble")
    close = next((i for i, c in enumerate(chunks) if c.startswith(b"--")), None)
    if close is None:
        raise MultipartError("multipart body has no closing delimiter")
    epilogue = chunks[close][2:]
    if strict and epilogue != b"\r\n":
        raise MultipartError("the closing delimiter must be followed by exactly CRLF")
    part_chunks = chunks[:close]
    if not part_chunks:
        raise MultipartError("multipart body has no parts")
    if len(part_chunks) > max_parts:
        raise MultipartError(f"multipart body has more than {max_parts} parts")
    parts: list[tuple[str, bytes]] = []
    for chunk in part_chunks:
        if not strict:
            chunk = chunk.lstrip(b" \t")  # transport padding (RFC 2046 5.1.1)
        if not chunk.startswith(eol):
            raise MultipartError("a delimiter line has trailing characters")
        chunk = chunk[len(eol):]
        if chunk.startswith(eol):
            head, content = b"", chunk[len(eol):]
        else:
            head, sep, content = chunk.partition(eol + eol)
            if not sep:
                raise MultipartError("a part has no blank line after its headers")
        headers = _headers(head, eol, strict)
        ctype = headers.get("content-type")
        if not ctype:
            raise MultipartError("a part has no Content-Type")
        cte = headers.get("content-transfer-encoding")
        if strict and (cte is None or cte.lower() != "base64"):
            raise MultipartError("a part lacks Content-Transfer-Encoding: base64")
        parts.append((ctype, _decode_base64(content, eol, strict)))
    return parts
