#!/usr/bin/env python3
"""The framework floor: the same listener as kipuka (aiohttp on uvloop, kipuka's TLS
context with optional client certificates, SO_REUSEPORT workers) answering
POST /.well-known/est/simpleenroll with a canned certificate, doing none of the
RA, CA or database work. What estload measures against it is the most kipuka
could reach on this machine with this stack.

    python benchmarks/floor_server.py -c DIR/kipuka.toml --listen 127.0.0.1:PORT --workers 2 [--response FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from kipuka.config import load_config
from kipuka.server.tls import ReloadableContext
from kipuka.server.worker import listen_socket

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


def serve(config: Path, listen: str, body: bytes) -> None:
    cfg = load_config(config)
    tls = ReloadableContext(cfg.tls)

    async def enroll(request: web.Request) -> web.Response:
        data = await request.read()
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not data or not peer:
            return web.Response(status=401, text="client certificate required\n")
        return web.Response(body=body, headers={"Content-Type": CERTS_ONLY, "Content-Transfer-Encoding": "base64"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/.well-known/est/simpleenroll", enroll)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
        await runner.setup()
        await web.SockSite(runner, listen_socket(listen), ssl_context=tls.listener).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await runner.cleanup()

    import uvloop
    uvloop.run(main())


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--response", type=Path, help="body to answer with (default: 1 KiB of base64 text)")
    a = ap.parse_args()
    body = a.response.read_bytes() if a.response else (b"MII" + b"A" * 61 + b"\n") * 16
    kids = []
    for _ in range(a.workers):
        pid = os.fork()
        if pid == 0:
            serve(a.config, a.listen, body)
            os._exit(0)
        kids.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in kids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in kids:
        try:
            os.wait()
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(cli())
