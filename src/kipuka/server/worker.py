"""One worker process: an event loop serving the EST listener.

Each worker opens its own socket (SO_REUSEPORT when there are several workers; the
supervisor checked that no other process listens there), its own database connections
and (after the fork) its own CA keys. SIGHUP rebuilds the Authority and the TLS
certificates from the configuration file and swaps them in; a bad file is
logged and the old state kept. SIGTERM stops accepting, lets in-flight requests
finish (up to [server] shutdown_timeout), then exits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from kipuka.admin.api import AdminApi
from kipuka.admin.auth import check_admin_anchors
from kipuka.brski.routes import BrskiFrontEnd
from kipuka.ca.registry import build_ca
from kipuka.config import Config, ConfigError, ListenOverrides, TLSConfig, load_config
from kipuka.est.app import BODY_TIMEOUT, EstFrontEnd
from kipuka.publish.app import PublishFrontEnd
from kipuka.ra.authority import Authority
from kipuka.ra.otp import OtpKeyring
from kipuka.tlsbinding import exporter_available
from kipuka.server import background
from kipuka.server.limits import ConnectionGuard, ConnectionLimits, GuardedSite
from kipuka.server.logs import ACCESS, est_middleware
from kipuka.server.proxy import ProxySite, proxied_remote
from kipuka.server.ratelimit import RateLimiter
from kipuka.server.tls import ReloadableContext, reloadable_context
from kipuka.store import AsyncStore, Store

log = logging.getLogger("kipuka.server")


def build_authority(config: Config, store: AsyncStore) -> Authority:
    cas = {ca_id: build_ca(cfg) for ca_id, cfg in config.cas.items()}
    check_admin_anchors(config, cas)  # [admin] subjects = ["*"] only with a CA of admins alone
    return Authority(config, cas, store, OtpKeyring.load(config.otp.key_file))


def _family_host_port(listen: str) -> tuple[socket.AddressFamily, str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host, int(port)


def check_address_free(listen: str, key: str) -> None:
    """Refuse to start on an address another process listens on.

    Workers share their port through SO_REUSEPORT, which the kernel grants to any
    process of the same user: a second, unrelated deployment started on the same
    port would otherwise run silently, the two answering alternately. A probe
    bound without SO_REUSEPORT fails while anyone else holds the port. Run once,
    by the process that starts the workers, before any of them binds.
    """
    family, host, port = _family_host_port(listen)
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left by our last run is fine
        probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(key, f"cannot listen on {listen}: {exc.strerror or exc}; another process (another "
                          "kipuka deployment?) is already listening there: stop it, or choose another address") \
            from None
    finally:
        probe.close()


def listen_socket(listen: str, shared: bool = True) -> socket.socket:
    """The listening socket of one worker; `shared` (more than one worker) joins the port's SO_REUSEPORT group."""
    family, host, port = _family_host_port(listen)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("listen", f"cannot listen on {listen}: {exc.strerror or exc}; another process is "
                          "already listening there") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Worker:
    def __init__(self, config_path: Path, overrides: ListenOverrides | None = None) -> None:
        self.config_path = config_path
        self.overrides = overrides or ListenOverrides()
        self.config = self.overrides.apply(load_config(config_path))
        self.listen = self.config.server.listen
        self.shared_port = (self.config.server.workers or os.cpu_count() or 1) > 1  # SO_REUSEPORT among workers
        store = Store(self.config.database.url)
        store.defer_checkpoints()  # background.py checkpoints every second instead
        self.store = AsyncStore(store)
        self.authority = build_authority(self.config, self.store)
        self.tls = reloadable_context(self.config.tls, client_cas(self.config))
        self.admin_tls = ReloadableContext(admin_tls(self.config))
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.inflight = InFlight()
        self.ratelimit = RateLimiter(lambda: self.config.ratelimit, lambda: self.authority)
        self.guard = ConnectionGuard(lambda: ConnectionLimits.of(self.config.server), self.ratelimit.charge_address)

    def est_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body,
                              middlewares=[proxied_remote, est_middleware(lambda: self.config.server.access_log),
                                           self.ratelimit.middleware])
        app[BODY_TIMEOUT] = lambda: self.config.server.body_timeout
        est = EstFrontEnd(lambda: self.authority, lambda: self.config.server.max_body)
        app.add_routes(est.routes())
        app.add_routes(BrskiFrontEnd(lambda: self.authority, lambda: self.config.server.max_body).routes())
        app.on_response_prepare.append(_server_header)
        return app

    def admin_app(self) -> web.Application:
        app = AdminApi(lambda: self.authority, lambda: self.config).app()
        app.on_response_prepare.append(_server_header)
        return app

    def publish_app(self) -> web.Application:
        app = web.Application(client_max_size=16384)
        app.add_routes(PublishFrontEnd(lambda: self.authority).routes())
        app.on_response_prepare.append(_server_header)
        return app

    def reload(self) -> None:
        """SIGHUP: reload in a task; one reload at a time, in the order the signals came."""
        asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        async with self._reload_lock:
            try:
                # Off the event loop: building CAs may fetch a remote CA's chain (Dogtag, an upstream
                # EST server) or open HSM sessions, and requests keep being served meanwhile.
                config, authority = await asyncio.get_running_loop().run_in_executor(None, self._build)
            except Exception as exc:  # keep serving with what we have
                log.error("reload failed, keeping the previous configuration: %s: %s", self.config_path, _named(exc))
                return
            self._swap(config, authority)

    def _build(self) -> tuple[Config, Authority]:
        config = self.overrides.apply(load_config(self.config_path))
        return config, build_authority(config, self.store)

    def _swap(self, config: Config, authority: Authority) -> None:
        try:
            self.tls.reload(config.tls, client_cas(config))
            self.admin_tls.reload(admin_tls(config))
        except Exception as exc:  # keep serving with what we have
            log.error("reload failed, keeping the previous configuration: %s: %s", self.config_path, _named(exc))
            return
        old, self.config, self.authority = self.authority, config, authority
        # Requests in flight finish on the old Authority; its back ends' connections close after them.
        loop = asyncio.get_running_loop()
        loop.call_later(config.server.shutdown_timeout, lambda: loop.create_task(close_backends(old)))
        log.info("configuration reloaded from %s", self.config_path)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        timeout = self.config.server.shutdown_timeout
        runners = []
        listeners = [(self.est_app(), self.listen, self.tls.listener, "EST on https://%s/.well-known/est/", 8190)]
        proxied = self.config.server.proxy_protocol
        if self.config.admin.listen:
            # Long filter URLs (seven 200-character parameters, percent-encoded) must reach
            # the API's own validation, which answers in JSON.
            listeners.append((self.admin_app(), self.config.admin.listen, self.admin_tls.listener,
                              "admin API on https://%s/admin/", 32768))
        if self.config.revocation.listen:
            listeners.append((self.publish_app(), self.config.revocation.listen, None,
                              "CRL and OCSP on http://%s/", 16384))
        sites = []
        for app, address, ssl_context, what, max_line in listeners:
            app.middlewares.insert(0, self.inflight.middleware)
            est = address == self.listen  # hostile-client limits (kipuka.server.limits) guard the EST listener
            sizes = ConnectionLimits.of(self.config.server).parser_options() if est else {"max_line_size": max_line}
            runner = web.AppRunner(app, access_log=None, keepalive_timeout=75, shutdown_timeout=timeout, **sizes)
            await runner.setup()
            if est:
                self.guard.attach(runner.server)  # type: ignore[arg-type]
            if proxied and est:
                site: web.SockSite | ProxySite = ProxySite(runner, listen_socket(address, self.shared_port), ssl_context,
                                                           self.config.server.proxy_from,
                                                           handshake_timeout=self.config.server.header_timeout)
                what += " (PROXY protocol v2)"
            elif est:
                site = GuardedSite(runner, listen_socket(address, self.shared_port), ssl_context=ssl_context, shutdown_timeout=timeout,
                                   handshake_timeout=self.config.server.header_timeout)
            else:
                site = web.SockSite(runner, listen_socket(address, self.shared_port), ssl_context=ssl_context, shutdown_timeout=timeout)
            await site.start()
            runners.append(runner)
            sites.append(site)
            log.info("serving " + what, address)
        if exporter_available():
            log.info("TLS 1.3 channel binding (tls-exporter) self-test passed")
        tasks = background.start(lambda: self.authority, lambda: self.config.audit)
        settle_garbage_collector()
        await self._stop.wait()
        log.info("stopping: no new connections; finishing in-flight requests")
        # Stop listening only. aiohttp's cleanup closes every connection at once and
        # then drops the rest of a body still arriving, so it runs after the drain.
        for site in sites:
            await site.stop()
        await self.inflight.drained(timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(runner.cleanup() for runner in runners))
        await close_backends(self.authority)
        self.store.close()
        ACCESS.flush()


def settle_garbage_collector() -> None:
    """What start-up built (configuration, CA chains, templates, routes) lives as long as the worker:
    frozen out of the cyclic collector's sight, a full collection under load no longer walks it; and
    the youngest generation is collected every 20,000 allocations instead of 700, since a request's
    objects are almost all freed by reference counting before any collection would look at them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def close_backends(authority: Authority) -> None:
    """Let back ends that hold connections (Dogtag, an upstream EST server) close them cleanly."""
    for ca in authority.cas.values():
        close = getattr(ca, "close", None)
        if close is not None:
            try:
                await close()
            except Exception as exc:  # shutting down: report and go on
                log.warning("closing CA %s: %s", getattr(ca, "id", "?"), exc)


class InFlight:
    """Counts requests being handled, so a graceful stop can wait for them."""

    QUIET = 0.3  # no request for this long after the listeners closed: done

    def __init__(self) -> None:
        self.count = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.count += 1
        try:
            return await handler(request)
        finally:
            self.count -= 1

    async def drained(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            if self.count:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= self.QUIET:
                return
            await asyncio.sleep(0.05)
        log.warning("stopping with %d requests still in flight after %ss", self.count, timeout)


def client_cas(config: Config) -> tuple[Path, ...]:
    """Client certificate anchors beyond [tls] client_ca: BRSKI manufacturers' IDevID CAs (RFC 8995 §5.1).

    Accepted at the handshake only; the RA lets an IDevID do nothing but BRSKI and §5.9 enrollment.
    """
    return config.brski.client_cas() if config.brski is not None else ()


def admin_tls(config: Config) -> TLSConfig:
    """The admin listener's TLS: its own certificate if given, else the EST one."""
    a = config.admin
    return TLSConfig(cert=a.cert or config.tls.cert, key=a.key or config.tls.key, client_ca=a.client_ca,
                     min_version=config.tls.min_version)


def _named(exc: Exception) -> str:
    """A reload failure in words that name the file: a ConfigError names its key and line (in the
    configuration file, named by the caller), an OSError its file; anything else says what it is."""
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "kipuka"


def run_worker(config_path: Path, overrides: ListenOverrides | None = None) -> None:
    worker = Worker(config_path, overrides)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(worker.run())
    else:
        uvloop.run(worker.run())
