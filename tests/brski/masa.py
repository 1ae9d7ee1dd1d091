"""A test MASA (RFC 8995 §5.5): a real HTTPS server in a thread that checks the registrar's
voucher request as a MASA must, then issues CMS-signed vouchers with its own key.

Checks, in order: the Content-Type; the registrar's CMS signature, by the TLS client
certificate, which carries id-kp-cmcRA; the leaves of the registrar request; the pledge's
request inside (prior-signed-voucher-request), signed by an IDevID of the manufacturer,
for the same serial number and nonce, naming a proximity-registrar-cert of the registrar's
domain. The voucher pins the registrar's domain CA (the self-signed certificate of its chain).
`mode` makes it misbehave on purpose: "wrong-nonce", "refuse" (403) or "busy" (503).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import threading
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.brski import cms
from tests.brski.pki import CMC_RA, Issuer, issue
from tests.helpers import write_identity

MEDIA = "application/voucher-cms+json"


class Refused(Exception):
    pass


class TestMasa:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, ca: Issuer, manufacturer_ca: Issuer, domain_root: Path, port: int) -> None:
        self.dir, self.ca, self.manufacturer_ca, self.port = directory, ca, manufacturer_ca, port
        self.domain_root = domain_root
        tls = issue(ca, "localhost", sans=[x509.DNSName("localhost")], ekus=[ExtendedKeyUsageOID.SERVER_AUTH])
        self.tls_files = write_identity(directory, f"masa-tls-{port}", tls.key, tls.cert)
        self.signer = issue(ca, "MASA voucher signer")
        self.mode = "ok"
        self.seen: list[dict] = []      # registrar voucher requests that passed every check
        self.failures: list[str] = []   # why others did not
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"localhost:{self.port}"  # the authority form an IDevID's MASA URL extension may hold

    def start(self) -> "TestMasa":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True, name=f"masa-{self.port}").start()
        assert ready.wait(10), "the test MASA did not start"
        return self

    async def _start(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*self.tls_files)
        ctx.load_verify_locations(cafile=str(self.domain_root))  # a registrar of the test's domain
        ctx.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_post("/.well-known/brski/requestvoucher", self.requestvoucher)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx).start()

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    async def requestvoucher(self, request: web.Request) -> web.Response:
        if self.mode == "refuse":
            return web.Response(status=403, text="this MASA does not sell to your domain\n")
        if self.mode == "busy":
            return web.Response(status=503, text="busy\n")
        if request.content_type != MEDIA:
            return web.Response(status=415, text="voucher-cms+json only\n")
        tls_client = x509.load_der_x509_certificate(
            request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True))
        try:
            voucher = self._voucher(await request.read(), tls_client)
        except (Refused, cms.CmsInvalid, ValueError, KeyError) as exc:
            self.failures.append(str(exc))
            return web.Response(status=400, text=f"{exc}\n")
        return web.Response(body=voucher, headers={"Content-Type": MEDIA})

    def _voucher(self, body: bytes, tls_client: x509.Certificate) -> bytes:
        content, signer, chain = cms.verify(body)
        if signer != tls_client:
            raise Refused("the registrar voucher request is not signed by the TLS client certificate")
        if CMC_RA not in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value:
            raise Refused("the registrar certificate lacks id-kp-cmcRA")
        vr = json.loads(content)["ietf-voucher-request:voucher"]
        for leaf in ("created-on", "nonce", "serial-number", "prior-signed-voucher-request", "idevid-issuer"):
            if leaf not in vr:
                raise Refused(f"the registrar voucher request has no {leaf}")
        pledge_content, idevid, _ = cms.verify(base64.b64decode(vr["prior-signed-voucher-request"]))
        idevid.verify_directly_issued_by(self.manufacturer_ca.cert)  # raises if not this manufacturer's
        serial = idevid.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
        pvr = json.loads(pledge_content)["ietf-voucher-request:voucher"]
        if not (pvr["serial-number"] == vr["serial-number"] == serial):
            raise Refused("serial numbers differ")
        if pvr["nonce"] != vr["nonce"]:
            raise Refused("the registrar changed the pledge's nonce")
        if pvr["assertion"] != "proximity":
            raise Refused("the pledge did not ask for proximity")
        aki = idevid.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        if base64.b64decode(vr["idevid-issuer"]) != b"\x04" + bytes([len(aki)]) + aki:
            raise Refused("idevid-issuer is not the IDevID's AKI as a DER OCTET STRING")
        proximity = x509.load_der_x509_certificate(base64.b64decode(pvr["proximity-registrar-cert"]))
        if not any(proximity.issuer == c.subject for c in chain):
            raise Refused("the pledge's proximity-registrar-cert is not of the registrar's domain")
        pinned = next((c for c in chain if c.issuer == c.subject), chain[-1])
        self.seen.append(vr)
        nonce = base64.b64encode(os.urandom(16)).decode() if self.mode == "wrong-nonce" else vr["nonce"]
        now = dt.datetime.now(dt.timezone.utc)
        voucher = {"ietf-voucher:voucher": {
            "created-on": now.isoformat().replace("+00:00", "Z"), "assertion": "logged",
            "serial-number": serial, "nonce": nonce, "idevid-issuer": vr["idevid-issuer"],
            "pinned-domain-cert": base64.b64encode(pinned.public_bytes(serialization.Encoding.DER)).decode(),
            "domain-cert-revocation-checks": False}}
        return cms.sign(json.dumps(voucher).encode(), self.signer.key, self.signer.cert)
