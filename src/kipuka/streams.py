"""Reading an HTTP body with a size bound, for aiohttp requests and client responses alike.

aiohttp's `StreamReader.read(n)` returns whatever is buffered (at most n bytes),
not n bytes: a body that arrives in several TCP segments comes back cut short.
This reads to the end or just past the bound, so callers can tell "too large".
"""

from __future__ import annotations

from aiohttp import StreamReader


async def read_at_most(stream: StreamReader, limit: int) -> bytes:
    """The whole body when it is at most `limit` bytes; otherwise its first `limit` + 1 bytes."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await stream.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)
