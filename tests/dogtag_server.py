"""A Dogtag-compatible HTTPS test server: the subset of Dogtag PKI's REST API that kipuka uses.

No Dogtag can run on these machines, so kipuka's Dogtag back end is tested
against this. It follows Dogtag PKI 11.x's published documentation; each
handler names its source (paths in the dogtagpki/pki GitHub repository, or
pages of its wiki). It keeps a real CA (a root and a "CA Signing Certificate"
made with cryptography), a request queue, a certificate repository with
revocation, and a KRA that generates and archives keys for server-side keygen.

- Profiles: "auto" issues on submission, "agent" issues when the submitter
  presents an agent certificate (Dogtag's AgentCertAuth), "manual" stays
  pending until an agent approves it (POST .../agent/certrequests/{id}/approve).
- Agents are TLS client certificates issued by the test root and registered
  with the state (`agent.pem`/`agent.key` is one; `other.pem` is not an agent).
- Replicas: several listeners (ports) share one state, as Dogtag clones share
  one database. Each replica has a fault switch ("500": every call answers
  500; "hang": calls never answer) for failover tests, settable in-process or
  through POST /kipuka-test/fault {"mode": ...} when run as a separate process.

Run in a thread (`DogtagTestServer(dir).start()`), or as a process:
    python -m tests.dogtag_server DIR --port 8443 --port 8444
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kipuka.ca.setup import make_issuing, make_root, make_tls_server

VERSION = "11.5.0"  # the Dogtag version whose documentation this follows
PROFILES = {"caServerCert": "manual", "caAgentServerCert": "agent", "caUserCert": "manual",
            "caServerKeygen_UserCert": "manual", "caServerKeygen_AgentUserCert": "agent",
            "caFullCMCUserCert": "agent"}  # CMC: the agent is the request's signer (CMCAuth)
KEYGEN_PROFILES = ("caServerKeygen_UserCert", "caServerKeygen_AgentUserCert")
REASONS = ("Unspecified", "Key_Compromise", "CA_Compromise", "Affiliation_Changed", "Superseded",
           "Cessation_of_Operation", "Certificate_Hold", "Remove_from_CRL", "Privilege_Withdrawn", "AA_Compromise")


def pki_error(status: int, class_name: str, message: str) -> web.Response:
    """A PKIException body (base/common/python/pki/__init__.py PKIException.from_json)."""
    return web.json_response({"Attributes": {"Attribute": []}, "ClassName": f"com.netscape.certsrv.{class_name}",
                              "Code": status, "Message": message}, status=status)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _dogtag_date(when: dt.datetime) -> str:
    return when.strftime("%a %b %d %H:%M:%S UTC %Y")


@dataclass
class CertRequest:
    id: int
    profile: str
    csr: x509.CertificateSigningRequest | None
    status: str = "pending"  # pending, complete, rejected, canceled
    serial: int | None = None
    error: str | None = None
    nonce: int | None = None


@dataclass
class CertRecord:
    cert: x509.Certificate
    status: str = "VALID"
    reason: str | None = None
    revoked_on: dt.datetime | None = None
    nonce: int | None = None


@dataclass
class ArchivedKey:
    id: int
    client_key_id: str
    pkcs8: bytes
    public_key: bytes
    algorithm: str
    size: int
    owner: str


@dataclass
class DogtagState:
    """One Dogtag CA (+KRA): keys, certificates, requests. Replicas share it."""

    directory: Path
    profiles: dict[str, str] = field(default_factory=lambda: dict(PROFILES))
    validity_days: int = 90
    kra_running: bool = True

    def __post_init__(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = make_root(self.root_key, "Dogtag test Root CA", "EXAMPLE")
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = make_issuing(self.ca_key, "CA Signing Certificate", "EXAMPLE", self.root, self.root_key)
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls_cert = make_tls_server(tls_key, ["127.0.0.1", "localhost"], self.root, self.root_key)
        (d / "root.pem").write_text(_pem(self.root))  # what kipuka's ca_bundle points at
        (d / "chain.pem").write_text(_pem(self.ca_cert) + _pem(self.root))
        (d / "tls.pem").write_text(_pem(tls_cert) + _pem(self.root))
        (d / "tls.key").write_bytes(_key_pem(tls_key))
        self.agents: set[bytes] = set()
        for name, agent in (("agent", True), ("other", False)):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self._client_cert(key, f"kipuka RA {name}")
            (d / f"{name}.pem").write_text(_pem(cert))
            (d / f"{name}.key").write_bytes(_key_pem(key))
            if agent:
                self.agents.add(cert.public_bytes(serialization.Encoding.DER))
        self.requests: dict[int, CertRequest] = {}
        self.certs: dict[int, CertRecord] = {}
        self.keys: dict[int, ArchivedKey] = {}
        self._next_request = 1

    def _client_cert(self, key: Any, cn: str) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.root.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.root_key, hashes.SHA256()))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.directory / "tls.pem", self.directory / "tls.key")
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(self.directory / "root.pem")
        return ctx

    def new_request(self, profile: str, csr: x509.CertificateSigningRequest | None) -> CertRequest:
        req = CertRequest(self._next_request, profile, csr)
        self._next_request += 1
        self.requests[req.id] = req
        return req

    def issue(self, req: CertRequest, public_key: Any = None, subject: x509.Name | None = None) -> x509.Certificate:
        """Sign per the profile: the CSR's subject and SANs, the profile's EKU and validity."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
        csr = req.csr
        eku = ExtendedKeyUsageOID.SERVER_AUTH if "Server" in req.profile and "Keygen" not in req.profile \
            else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(subject or csr.subject)  # type: ignore[union-attr]
                   .issuer_name(self.ca_cert.subject)
                   .public_key(public_key or csr.public_key())  # type: ignore[union-attr]
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=self.validity_days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                                  critical=False))
        if csr is not None:
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                builder = builder.add_extension(san, critical=False)
            except x509.ExtensionNotFound:
                pass
        cert = builder.sign(self.ca_key, hashes.SHA256())
        self.certs[cert.serial_number] = CertRecord(cert)
        req.status, req.serial = "complete", cert.serial_number
        return cert

    def pending(self) -> list[int]:
        return [r.id for r in self.requests.values() if r.status == "pending"]


class Replica:
    """One listener (one Dogtag clone) over the shared state, with a fault switch."""

    def __init__(self, state: DogtagState, port: int = 0) -> None:
        self.state = state
        self.port = port
        self.fault: str | None = None
        self.hits = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults])
        s = self
        app.add_routes([
            web.post("/kipuka-test/fault", s.set_fault),
            web.get("/pki/rest/info", s.info),
            web.get("/ca/admin/ca/getStatus", s.ca_status),
            web.get("/kra/admin/kra/getStatus", s.kra_status),
            web.get("/ca/rest/authorities/host-authority/cert", s.host_cert),
            web.get("/ca/rest/authorities/host-authority/chain", s.host_chain),
            web.post("/ca/rest/certrequests", s.submit),
            web.get("/ca/rest/certrequests/{id}", s.request_info),
            web.get("/ca/rest/agent/certrequests/{id}", s.review),
            web.post("/ca/rest/agent/certrequests/{id}/{action}", s.act),
            web.get("/ca/rest/certs/{id}", s.cert),
            web.get("/ca/rest/agent/certs/{id}", s.agent_cert),
            web.post("/ca/rest/agent/certs/{id}/revoke", s.revoke),
            web.post("/ca/ee/ca/profileSubmit", s.profile_submit),
            web.post("/ca/ee/ca/profileSubmitCMCFull", s.profile_submit_cmc),
            web.get("/kra/rest/agent/keys", s.list_keys),
        ])
        return app

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/kipuka-test/"):
            return await handler(request)
        self.hits += 1
        if self.fault == "500":
            return pki_error(500, "base.PKIException", "Internal Server Error")
        if self.fault == "hang":
            await asyncio.sleep(3600)
        return await handler(request)

    async def set_fault(self, request: web.Request) -> web.Response:
        self.fault = (await request.json()).get("mode")
        return web.json_response({"mode": self.fault})

    # --- helpers ---------------------------------------------------------------------------------

    def _is_agent(self, request: web.Request) -> bool:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        return peer is not None and peer in self.state.agents

    def _agent_only(self, request: web.Request) -> web.Response | None:
        # Agent resources need a client certificate of a user in the Certificate Manager Agents group.
        if not self._is_agent(request):
            return pki_error(403, "base.ForbiddenException", "Authorization Error")
        return None

    def _request_info(self, req: CertRequest, request: web.Request) -> dict[str, Any]:
        """CertRequestInfo (certsrv/request/CMSRequestInfo.java + certsrv/cert/CertRequestInfo.java)."""
        base = f"https://{request.host}"
        info: dict[str, Any] = {"requestID": str(req.id), "requestType": "enrollment",
                                "requestStatus": req.status, "requestURL": f"{base}/ca/rest/certrequests/{req.id}",
                                "certRequestType": "pkcs10",
                                "operationResult": "error" if req.status == "rejected" else "success"}
        if req.serial is not None:
            info["certId"] = hex(req.serial)
            info["certURL"] = f"{base}/ca/rest/certs/{hex(req.serial)}"
        if req.error:
            info["errorMessage"] = req.error
        return info

    def _find_request(self, raw: str) -> CertRequest | None:
        try:
            return self.state.requests.get(int(raw, 0))  # "dec/hex request ID"
        except ValueError:
            return None

    def _find_cert(self, raw: str) -> CertRecord | None:
        try:
            return self.state.certs.get(int(raw, 0))
        except ValueError:
            return None

    def _cert_data(self, rec: CertRecord, request: web.Request, nonce: int | None = None) -> dict[str, Any]:
        """CertData (wiki "CA Get Certificate REST API", certsrv/cert/CertData.java)."""
        c = rec.cert
        return {"id": hex(c.serial_number), "IssuerDN": c.issuer.rfc4514_string(),
                "SubjectDN": c.subject.rfc4514_string(), "PrettyPrint": f"Certificate: {hex(c.serial_number)}",
                "Encoded": _pem(c), "PKCS7CertChain": None,
                "NotBefore": _dogtag_date(c.not_valid_before_utc), "NotAfter": _dogtag_date(c.not_valid_after_utc),
                "Status": rec.status, "RevokedOn": _dogtag_date(rec.revoked_on) if rec.revoked_on else None,
                "RevokedBy": "kipuka RA agent" if rec.revoked_on else None, "RevocationReason": rec.reason,
                "Nonce": nonce,
                "Link": {"rel": "self", "href": f"https://{request.host}/ca/rest/certs/{hex(c.serial_number)}",
                         "type": "application/json"}}

    # --- status and CA certificates -------------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        # wiki "PKI Get Info REST API"
        return web.json_response({"Attributes": {"Attribute": []}, "Name": "Dogtag Certificate System",
                                  "Version": VERSION})

    async def ca_status(self, request: web.Request) -> web.Response:
        # wiki "GetStatus Service" (JSON from PKI 11)
        return web.json_response({"Response": {"State": "1", "Type": "CA", "Status": "running",
                                               "Version": f"{VERSION}-1 (kipuka test server)",
                                               "ProductVersion": "Dogtag Certificate System"}})

    async def kra_status(self, request: web.Request) -> web.Response:
        status = "running" if self.state.kra_running else "starting"
        return web.json_response({"Response": {"State": "1" if self.state.kra_running else "0", "Type": "KRA",
                                               "Status": status, "Version": f"{VERSION}-1 (kipuka test server)"}})

    async def host_cert(self, request: web.Request) -> web.Response:
        # certsrv/authority/AuthorityResource.java: {id}/cert as application/x-pem-file or application/pkix-cert
        if "application/x-pem-file" in request.headers.get("Accept", ""):
            return web.Response(text=_pem(self.state.ca_cert), content_type="application/x-pem-file")
        return web.Response(body=self.state.ca_cert.public_bytes(serialization.Encoding.DER),
                            content_type="application/pkix-cert")

    async def host_chain(self, request: web.Request) -> web.Response:
        # AuthorityResource.java: {id}/chain as application/x-pem-file (order not promised: root first here)
        return web.Response(text=_pem(self.state.root) + _pem(self.state.ca_cert), content_type="application/x-pem-file")

    # --- enrollment ------------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        """POST /ca/rest/certrequests (wiki "PKI CA Submit Certificate Request REST API")."""
        try:
            body = await request.json()
        except ValueError:
            return pki_error(400, "base.BadRequestException", "Unable to parse the request body")
        profile = body.get("ProfileID")
        mode = self.state.profiles.get(profile)
        if mode is None:
            return pki_error(404, "profile.ProfileNotFoundException", f"Profile {profile} not found")
        values = {a.get("name"): a.get("Value") for i in body.get("Input") or [] for a in i.get("Attribute") or []}
        if values.get("cert_request_type") != "pkcs10" or not values.get("cert_request"):
            return pki_error(400, "base.BadRequestException", "Missing or unsupported certificate request")
        try:
            csr = x509.load_pem_x509_csr(str(values["cert_request"]).encode())
            if not csr.is_signature_valid:
                raise ValueError("bad signature")
        except ValueError:
            return pki_error(400, "base.BadRequestException", "Invalid certificate request: unable to parse PKCS #10")
        key = csr.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:  # the profile's keyConstraintImpl
            return pki_error(400, "base.BadRequestException", f"Key Parameters {key.key_size} Not Matched")
        req = self.state.new_request(profile, csr)
        if not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            req.status, req.error = "rejected", "Subject Name Not Found"  # a profile constraint refusing it
        elif mode == "auto" or (mode == "agent" and self._is_agent(request)):
            self.state.issue(req)
        # CertRequestInfos (certsrv/cert/CertRequestInfos.java; base/common/python/pki/cert.py)
        return web.json_response({"total": 1, "entries": [self._request_info(req, request)], "Link": []})

    async def request_info(self, request: web.Request) -> web.Response:
        req = self._find_request(request.match_info["id"])
        if req is None:
            return pki_error(404, "request.RequestNotFoundException", f"Request ID {request.match_info['id']} not found")
        return web.json_response(self._request_info(req, request))

    async def review(self, request: web.Request) -> web.Response:
        """GET /ca/rest/agent/certrequests/{id} (wiki "PKI CA Review Certificate Request REST API")."""
        if (denied := self._agent_only(request)) is not None:
            return denied
        req = self._find_request(request.match_info["id"])
        if req is None:
            return pki_error(404, "request.RequestNotFoundException", f"Request ID {request.match_info['id']} not found")
        req.nonce = secrets.randbits(62)
        csr_pem = req.csr.public_bytes(serialization.Encoding.PEM).decode() if req.csr else None
        return web.json_response({
            "nonce": str(req.nonce), "requestId": str(req.id), "requestType": "enrollment",
            "requestStatus": req.status, "requestCreationTime": _dogtag_date(dt.datetime.now(dt.timezone.utc)),
            "profileApprovedBy": None, "profileSetId": "serverCertSet", "profileIsVisible": "true",
            "profileName": req.profile, "Attributes": {"Attribute": []}, "ProfileID": req.profile, "Renewal": False,
            "Input": [{"id": None, "ClassID": "CertReqInput", "Name": "Certificate Request Input", "Text": None,
                       "Attribute": [{"name": "cert_request_type", "Value": "pkcs10", "Descriptor": None},
                                     {"name": "cert_request", "Value": csr_pem, "Descriptor": None}]}],
            "Output": [], "ProfilePolicySet": []})

    async def act(self, request: web.Request) -> web.Response:
        """POST .../agent/certrequests/{id}/{approve,reject,cancel} (certsrv/cert/AgentCertRequestResource.java)."""
        if (denied := self._agent_only(request)) is not None:
            return denied
        action = request.match_info["action"]
        if action not in ("approve", "reject", "cancel"):
            return pki_error(404, "base.ResourceNotFoundException", f"No such action {action}")
        req = self._find_request(request.match_info["id"])
        if req is None:
            return pki_error(404, "request.RequestNotFoundException", f"Request ID {request.match_info['id']} not found")
        try:
            body = await request.json()
        except ValueError:
            return pki_error(400, "base.BadRequestException", "Unable to parse the review")
        if req.nonce is None or str(body.get("nonce")) != str(req.nonce):
            return pki_error(400, "base.BadRequestException", "Missing or invalid nonce")
        req.nonce = None
        if req.status != "pending":
            return pki_error(409, "base.ConflictingOperationException", f"Request {req.id} is {req.status}")
        if action == "approve":
            self.state.issue(req)
        else:
            req.status = "rejected" if action == "reject" else "canceled"
        return web.Response(status=204)

    async def cert(self, request: web.Request) -> web.Response:
        rec = self._find_cert(request.match_info["id"])
        if rec is None:
            return pki_error(404, "cert.CertNotFoundException", f"Certificate ID {request.match_info['id']} not found")
        return web.json_response(self._cert_data(rec, request))

    # --- revocation ------------------------------------------------------------------------------

    async def agent_cert(self, request: web.Request) -> web.Response:
        """GET /ca/rest/agent/certs/{id}: the CertData with a nonce (pki/cert.py CertClient.review_cert)."""
        if (denied := self._agent_only(request)) is not None:
            return denied
        rec = self._find_cert(request.match_info["id"])
        if rec is None:
            return pki_error(404, "cert.CertNotFoundException", f"Certificate ID {request.match_info['id']} not found")
        rec.nonce = secrets.randbits(62)
        return web.json_response(self._cert_data(rec, request, rec.nonce))

    async def revoke(self, request: web.Request) -> web.Response:
        """POST /ca/rest/agent/certs/{id}/revoke with a CertRevokeRequest (certsrv/cert/CertRevokeRequest.java)."""
        if (denied := self._agent_only(request)) is not None:
            return denied
        rec = self._find_cert(request.match_info["id"])
        if rec is None:
            return pki_error(404, "cert.CertNotFoundException", f"Certificate ID {request.match_info['id']} not found")
        body = await request.json()
        if rec.nonce is None or body.get("Nonce") != rec.nonce:
            return pki_error(400, "base.BadRequestException", "Missing or invalid nonce")
        rec.nonce = None
        if body.get("Reason") not in REASONS:
            return pki_error(400, "base.BadRequestException", f"Invalid revocation reason {body.get('Reason')}")
        if rec.status == "REVOKED":
            return pki_error(409, "base.ConflictingOperationException", "Certificate already revoked")
        rec.status, rec.reason, rec.revoked_on = "REVOKED", body["Reason"], dt.datetime.now(dt.timezone.utc)
        req = self.state.new_request("revocation", None)
        req.status, req.serial = "complete", rec.cert.serial_number
        info = self._request_info(req, request)
        info["requestType"] = "revocation"
        return web.json_response(info)

    # --- server-side keygen through the KRA -------------------------------------------------------

    async def profile_submit(self, request: web.Request) -> web.Response:
        """POST /ca/ee/ca/profileSubmit for a server-side keygen profile (docs/admin/ServerSideKeygen.adoc).

        Dogtag answers a form submission with an HTML page carrying JavaScript
        variables (requestList.requestId, errorReason); an approved server-side
        keygen enrollment returns the PKCS#12 to its submitter instead.
        """
        form = await request.post()
        profile = str(form.get("profileId", ""))
        mode = self.state.profiles.get(profile)
        if mode is None or profile not in KEYGEN_PROFILES:
            return _page(error="Profile not found or not a server-side keygen profile")
        password = str(form.get("serverSideKeygenP12Passwd", ""))
        if password != form.get("p12PasswordAgain") or len(password) < 20:
            return _page(error="PKCS12 password does not meet the password constraint")
        if not self.state.kra_running:
            return _page(error="KRA connector not configured or KRA unavailable")
        key_type, key_size = form.get("keyType"), str(form.get("keySize", ""))
        if key_type == "EC" and key_size in ("nistp256", "nistp384", "nistp521"):
            key: Any = ec.generate_private_key({"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(),
                                                "nistp521": ec.SECP521R1()}[key_size])
            size = key.curve.key_size
        elif key_type == "RSA" and key_size in ("2048", "3072", "4096"):
            key = rsa.generate_private_key(65537, int(key_size))
            size = int(key_size)
        else:
            return _page(error=f"Invalid key type or size {key_type}/{key_size}")
        cn = str(form.get("sn_cn") or form.get("sn_uid") or "")
        if not cn:
            return _page(error="Subject Name Not Found")
        req = self.state.new_request(profile, None)
        if not (mode == "auto" or (mode == "agent" and self._is_agent(request))):
            return _page(request_id=req.id)  # held for an agent, as caServerKeygen_UserCert is
        cert = self.state.issue(req, key.public_key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        # The KRA archives the generated key (serverKeygenUserKeyDefaultImpl enableArchival=true).
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = len(self.state.keys) + 1
        self.state.keys[kid] = ArchivedKey(kid, f"{hex(cert.serial_number)}", _pkcs8(key), spki,
                                           "EC" if key_type == "EC" else "RSA", size, cn)
        p12 = pkcs12.serialize_key_and_certificates(cn.encode(), key, cert, [self.state.ca_cert, self.state.root],
                                                    serialization.BestAvailableEncryption(password.encode()))
        return web.Response(body=p12, content_type="application/x-pkcs12")

    async def profile_submit_cmc(self, request: web.Request) -> web.Response:
        """POST /ca/ee/ca/profileSubmitCMCFull?profileId=... (RHCS 9 Command-Line Tools Guide 12.2).

        The body is a DER Full PKI Request; the answer a Full PKI Response signed by
        the CA. As Dogtag's CMCAuth does, a request must be signed by an agent.
        Decoded and answered with kipuka's own CMC codec (kipuka.cmc), which has its
        own tests against Bouncy Castle.
        """
        from kipuka.cmc import (BodyPartIds, CMCFailInfo, CmcError, CMCStatus, build_pki_response, echo_controls,
                                parse_cmc_request, status_info_v2)

        profile = request.query.get("profileId", "")
        if profile not in self.state.profiles:
            return pki_error(404, "profile.ProfileNotFoundException", f"Profile {profile} not found")
        ids, certs = BodyPartIds(), []
        try:
            signed = parse_cmc_request(await request.read())
        except CmcError as exc:
            controls = [status_info_v2(ids.next(), CMCStatus.failed, [0], status_string=exc.reason,
                                       fail_info=CMCFailInfo.badMessageCheck)]
        else:
            controls = echo_controls(signed.pki_data, ids)
            agent_signed = any(s.certificate is not None and s.certificate.public_bytes(serialization.Encoding.DER)
                               in self.state.agents for s in signed.signers)
            tcrs = [r for r in signed.pki_data.requests if r.kind == "tcr"]
            if not agent_signed:
                controls.append(status_info_v2(ids.next(), CMCStatus.failed, [0], status_string="not agent-signed",
                                               fail_info=CMCFailInfo.badIdentity))
            elif not tcrs:
                controls.append(status_info_v2(ids.next(), CMCStatus.failed, [0], status_string="no PKCS #10",
                                               fail_info=CMCFailInfo.badRequest))
            else:
                for tcr in tcrs:
                    certs.append(self.state.issue(self.state.new_request(profile, tcr.csr)))
                controls.append(status_info_v2(ids.next(), CMCStatus.success, [t.body_part_id for t in tcrs]))
        der = build_pki_response(controls, certificates=certs, signer_key=self.state.ca_key,
                                 signer_cert=self.state.ca_cert, chain=[self.state.root])
        return web.Response(body=der, content_type="application/pkcs7-mime")

    async def list_keys(self, request: web.Request) -> web.Response:
        """GET /kra/rest/agent/keys: KeyInfoCollection (base/common/python/pki/key.py KeyInfo)."""
        if (denied := self._agent_only(request)) is not None:
            return denied
        base = f"https://{request.host}"
        entries = [{"keyURL": f"{base}/kra/rest/agent/keys/{k.id}", "clientKeyID": k.client_key_id,
                    "status": "active", "algorithm": k.algorithm, "size": k.size, "ownerName": k.owner,
                    "publicKey": base64.b64encode(k.public_key).decode()} for k in self.state.keys.values()]
        return web.json_response({"total": len(entries), "entries": entries, "Link": []})


def _pkcs8(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _page(*, error: str = "", request_id: int | None = None) -> web.Response:
    """The shape of Dogtag's EE profile pages: JavaScript variables in HTML."""
    lines = ["<html><head><script>", "var requestList = new Object();"]
    if request_id is not None:
        lines.append(f'requestList.requestId="{request_id}";')
        lines.append('var errorCode="2";')
    else:
        lines.append('var errorCode="1";')
    lines.append(f'var errorReason="{error}";')
    lines.append("</script></head><body>Certificate Profile</body></html>")
    return web.Response(text="\n".join(lines), content_type="text/html")


class DogtagTestServer:
    """Replicas of one Dogtag state, served from a thread of their own (or run() in a process)."""

    def __init__(self, directory: Path, ports: tuple[int, ...] = (0,), **state_kwargs: Any) -> None:
        self.state = DogtagState(directory, **state_kwargs)
        self.replicas = [Replica(self.state, port) for port in ports]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    async def _start(self) -> None:
        ctx = self.state.server_context()
        for replica in self.replicas:
            await self._start_replica(replica, ctx)

    async def _start_replica(self, replica: Replica, ctx: ssl.SSLContext) -> None:
        replica.runner = web.AppRunner(replica.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await replica.runner.setup()
        site = web.TCPSite(replica.runner, "127.0.0.1", replica.port, ssl_context=ctx, reuse_address=True)
        await site.start()
        replica.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> "DogtagTestServer":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="dogtag-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("the Dogtag test server did not start")
        return self

    def call(self, coro: Any, timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_replica(self, index: int) -> None:
        """Close one replica's listener (a clone that went away)."""
        runner = self.replicas[index].runner
        if runner is not None:
            self.call(runner.cleanup())

    def stop(self) -> None:
        if self._loop is None:
            return
        for replica in self.replicas:
            if replica.runner is not None:
                try:
                    self.call(replica.runner.cleanup())
                except Exception:  # noqa: BLE001 - already closed
                    pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "DogtagTestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A Dogtag-compatible HTTPS test server (kipuka tests)")
    parser.add_argument("directory", type=Path, help="where the CA, TLS and agent files are written")
    parser.add_argument("--port", type=int, action="append", help="one per replica (default: one, random)")
    args = parser.parse_args()
    server = DogtagTestServer(args.directory, tuple(args.port or [0])).start()
    print(json.dumps({"urls": server.urls, "ca_bundle": str(args.directory / "root.pem"),
                      "agent_cert": str(args.directory / "agent.pem"), "agent_key": str(args.directory / "agent.key"),
                      "chain": str(args.directory / "chain.pem")}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
