"""A pledge driver (RFC 8995 §5.1-§5.9) on cryptography and pyasn1: what a device with
only its IDevID does to find its owner and enroll.

1. Provisional TLS to the registrar (its certificate not yet trusted), IDevID as client certificate.
2. A voucher request signed with the IDevID key: created-on, nonce, serial-number, assertion
   "proximity" and the registrar's TLS certificate as proximity-registrar-cert.
3. The voucher checked as RFC 8366 §5.4 / RFC 8995 §5.6.1 say: signed by the MASA (the
   manufacturer-installed trust anchor), of content type id-ct-animaJSONVoucher, for this serial
   number and this nonce, with a pinned-domain-cert; from then on the registrar's TLS
   certificate must chain to that pinned-domain-cert (§5.6.2: every later request verifies it).
4. EST with the IDevID (§5.9), then enrollstatus (§5.9.4).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.brski import cms
from tests.brski.pki import Issuer
from tests.helpers import b64, certs_from, make_csr, new_key, write_identity

MEDIA = "application/voucher-cms+json"


class VoucherRejected(Exception):
    """The pledge refuses the voucher (and so the registrar)."""


@dataclass
class Pledge:
    idevid: Issuer
    directory: Path
    masa_anchor: x509.Certificate          # installed by the manufacturer
    host: str = "localhost"
    port: int = 0
    nonce: bytes = field(default_factory=lambda: os.urandom(16))
    pinned: Path | None = None             # the domain CA, once a voucher pinned it

    def __post_init__(self) -> None:
        self.serial = self.idevid.cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value
        self.files = write_identity(self.directory, f"idevid-{self.serial}", self.idevid.key, self.idevid.cert)

    # --- step 1 and 2 ----------------------------------------------------------------

    def registrar_certificate(self) -> x509.Certificate:
        """The registrar's TLS certificate from a provisional (unverified) handshake."""
        pem = ssl.get_server_certificate(("127.0.0.1", self.port))
        return x509.load_pem_x509_certificate(pem.encode())

    def voucher_request(self, proximity: x509.Certificate | None = None, **override) -> bytes:
        proximity = proximity or self.registrar_certificate()
        leaves = {"created-on": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
                  "nonce": base64.b64encode(self.nonce).decode(), "serial-number": self.serial,
                  "assertion": "proximity",
                  "proximity-registrar-cert": base64.b64encode(
                      proximity.public_bytes(serialization.Encoding.DER)).decode()}
        leaves.update(override)
        leaves = {k: v for k, v in leaves.items() if v is not None}
        return cms.sign(json.dumps({"ietf-voucher-request:voucher": leaves}).encode(), self.idevid.key,
                        self.idevid.cert)

    def post_voucher_request(self, body: bytes | None = None, *, cert: tuple[str, str] | None = None,
                             content_type: str = MEDIA) -> requests.Response:
        return requests.post(self._url("brski", "requestvoucher"), data=body or self.voucher_request(),
                             cert=cert or self.files, verify=False,  # provisional: nothing trusted yet
                             headers={"Content-Type": content_type, "Accept": MEDIA}, timeout=60)

    # --- step 3 ----------------------------------------------------------------------

    def accept_voucher(self, response: requests.Response) -> dict:
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["Content-Type"] == MEDIA
        return self.verify_voucher(response.content)

    def verify_voucher(self, der: bytes) -> dict:
        try:
            content, signer, chain = cms.verify(der)
        except cms.CmsInvalid as exc:
            raise VoucherRejected(f"voucher signature: {exc}") from None
        if signer != self.masa_anchor:
            try:
                signer.verify_directly_issued_by(self.masa_anchor)
            except Exception:
                raise VoucherRejected("the voucher is not signed by this pledge's MASA") from None
        voucher = json.loads(content)["ietf-voucher:voucher"]
        for leaf in ("created-on", "assertion", "serial-number", "pinned-domain-cert"):
            if leaf not in voucher:
                raise VoucherRejected(f"the voucher has no {leaf}")
        if voucher["serial-number"] != self.serial:
            raise VoucherRejected("the voucher is for another device")
        if base64.b64decode(voucher.get("nonce", "")) != self.nonce:
            raise VoucherRejected("the voucher does not carry this pledge's nonce")
        if "expires-on" in voucher and dt.datetime.fromisoformat(
                voucher["expires-on"].replace("Z", "+00:00")) < dt.datetime.now(dt.timezone.utc):
            raise VoucherRejected("the voucher has expired")
        pinned = x509.load_der_x509_certificate(base64.b64decode(voucher["pinned-domain-cert"]))
        self.pinned = self.directory / f"pinned-{self.serial}.pem"
        self.pinned.write_bytes(pinned.public_bytes(serialization.Encoding.PEM))
        # §5.6.2: the provisional connection is now judged by the pinned domain CA.
        requests.get(self._url("est", "cacerts"), verify=str(self.pinned), timeout=30).raise_for_status()
        return voucher

    # --- step 4 ----------------------------------------------------------------------

    def enroll(self, label: str | None = None, cn: str | None = None) -> requests.Response:
        _, csr = make_csr(cn or f"{self.serial}.devices.example", new_key())
        return requests.post(self._url("est", "simpleenroll", label), data=b64(csr), cert=self.files,
                             verify=str(self.pinned) if self.pinned else False,
                             headers={"Content-Type": "application/pkcs10"}, timeout=60)

    def ldevid(self, response: requests.Response) -> x509.Certificate:
        return certs_from(response)[0]

    def report(self, what: str, status: bool = True, reason: str = "") -> requests.Response:
        doc = {"version": 1, "status": status, "reason": reason, "reason-context": {"pledge": "test"}}
        return requests.post(self._url("brski", what), data=json.dumps(doc), cert=self.files,
                             verify=str(self.pinned) if self.pinned else False,
                             headers={"Content-Type": "application/json"}, timeout=30)

    def _url(self, tree: str, op: str, label: str | None = None) -> str:
        middle = f"{label}/" if label else ""
        return f"https://{self.host}:{self.port}/.well-known/{tree}/{middle}{op}"


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()
