"""One worker process: an event loop serving the EST listener.

Each worker opens its own SO_REUSEPORT socket, its own database connections
and (after the fork) its own CA keys. SIGHUP rebuilds the Authority and the TLS
certificates from the configuration file and swaps them in; a bad file is
logged and the old state kept. SIGTERM stops accepting, lets in-flight requests
finish (up to [server] shutdown_timeout), then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from aiohttp import web

from kipuka.ca.registry import build_ca
from kipuka.config import Config, load_config
from kipuka.est.app import EstFrontEnd
from kipuka.ra.authority import Authority
from kipuka.ra.otp import OtpKeyring
from kipuka.server.tls import ReloadableContext
from kipuka.store import AsyncStore, Store

log = logging.getLogger("kipuka.server")


def build_authority(config: Config, store: AsyncStore) -> Authority:
    cas = {ca_id: build_ca(cfg) for ca_id, cfg in config.cas.items()}
    return Authority(config, cas, store, OtpKeyring.load(config.otp.key_file))


def listen_socket(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Worker:
    def __init__(self, config_path: Path, listen: str | None) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.listen = listen or self.config.server.listen
        self.store = AsyncStore(Store(self.config.database.url))
        self.authority = build_authority(self.config, self.store)
        self.tls = ReloadableContext(self.config.tls)
        self._stop = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body)
        est = EstFrontEnd(lambda: self.authority, lambda: self.config.server.max_body)
        app.add_routes(est.routes())
        app.on_response_prepare.append(_server_header)
        return app

    def reload(self) -> None:
        try:
            config = load_config(self.config_path)
            authority = build_authority(config, self.store)
            self.tls.reload(config.tls)
        except Exception as exc:  # keep serving with what we have
            log.error("reload failed, keeping the previous configuration: %s", exc)
            return
        self.config, self.authority = config, authority
        log.info("configuration reloaded from %s", self.config_path)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=75,
                               shutdown_timeout=self.config.server.shutdown_timeout)
        await runner.setup()
        site = web.SockSite(runner, listen_socket(self.listen), ssl_context=self.tls.listener,
                            shutdown_timeout=self.config.server.shutdown_timeout)
        await site.start()
        log.info("serving EST on https://%s/.well-known/est/", self.listen)
        await self._stop.wait()
        log.info("stopping: finishing in-flight requests")
        await runner.cleanup()
        self.store.close()


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "kipuka"


def run_worker(config_path: Path, listen: str | None) -> None:
    worker = Worker(config_path, listen)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(worker.run())
    else:
        uvloop.run(worker.run())
