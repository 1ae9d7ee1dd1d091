"""A small client for the parts of Dogtag PKI's REST API that kipuka uses.

It speaks only HTTP and Dogtag's JSON; what the answers mean to kipuka is
decided in ca/dogtag.py. Written against Dogtag PKI 11.x (REST API v1, JSON)
from Dogtag's published documentation; every body names its source below:

- wiki "PKI CA Submit Certificate Request REST API": POST /ca/rest/certrequests
  with a CertEnrollmentRequest (ProfileID, Renewal, Input[...]); the answer is
  CertRequestInfos {"total", "entries": [CertRequestInfo], "Link"}.
- CertRequestInfo fields: base/common/src/main/java/com/netscape/certsrv/
  request/CMSRequestInfo.java (requestID, requestType, requestStatus,
  requestURL) and cert/CertRequestInfo.java (certId, certURL, certRequestType,
  operationResult, errorMessage); request states from the Python client
  base/common/python/pki/cert.py CertRequestStatus (pending, canceled,
  rejected, complete).
- wiki "PKI CA Review Certificate Request REST API": GET
  /ca/rest/agent/certrequests/{id} (client certificate) gives a
  CertReviewResponse with a "nonce"; cert/AgentCertRequestResource.java:
  POST .../{id}/approve with that CertReviewResponse as the body.
- wiki "CA Get Certificate REST API": GET /ca/rest/certs/{id} gives CertData
  {"id", "IssuerDN", "SubjectDN", "Encoded" (PEM), "Status", "Nonce", ...}.
- Revocation, from base/common/python/pki/cert.py CertClient.revoke_cert and
  cert/CertRevokeRequest.java: GET /ca/rest/agent/certs/{id} for a CertData
  with a "Nonce", then POST /ca/rest/agent/certs/{id}/revoke with
  {"Reason": "Key_Compromise", "Nonce": n, "Comments": ...}; the answer is a
  CertRequestInfo.
- Errors: base/common/python/pki/__init__.py PKIException.from_json:
  {"ClassName": "com.netscape.certsrv.base.BadRequestException", "Code": 400,
  "Message": "...", "Attributes": {"Attribute": []}}.
- wiki "GetStatus Service": GET /ca/admin/ca/getStatus (no authentication),
  JSON from PKI 11 on: {"Response": {"State": "1", "Type": "CA",
  "Status": "running", "Version": ...}}; the same path exists per subsystem
  (/kra/admin/kra/getStatus).
- authority/AuthorityResource.java: GET /ca/rest/authorities/host-authority/
  chain and .../cert with Accept: application/x-pem-file.
- Server-side keygen with KRA archival, docs/admin/ServerSideKeygen.adoc and
  Dogtag's own test of it (pki tests, Bugzilla 1629025): POST
  /ca/ee/ca/profileSubmit, form fields profileId, serverSideKeygenP12Passwd,
  p12PasswordAgain, keyType (RSA|EC), keySize (2048|nistp256...), sn_cn,
  renewal=false, xmlOutput=false; once approved the KRA-generated key comes
  back to the submitter as a PKCS#12 under that password.
- Full CMC, Red Hat Certificate System 9 Command-Line Tools Guide 12.2
  ("CMCRequest usage"): a DER Full PKI Request POSTed to
  /ca/ee/ca/profileSubmitCMCFull (profileId in the query), the answer a DER
  Full PKI Response.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from kipuka.streams import read_at_most

MAX_ANSWER = 4 * 1024 * 1024  # bytes; a CRL-sized chain or PKCS#12 fits many times over
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class DogtagUnreachable(Exception):
    """No usable answer: connection refused or reset, TLS failure, timeout, or a 5xx."""


class DogtagError(Exception):
    """Dogtag answered with a 4xx (a PKIException body when it is Dogtag itself)."""

    def __init__(self, status: int, message: str, class_name: str = "") -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.class_name = class_name


@dataclass(frozen=True)
class RequestInfo:
    """The fields of a CertRequestInfo kipuka reads."""

    request_id: str
    status: str  # pending, complete, rejected, canceled (also begin, approved, svc_pending)
    cert_id: str | None
    error: str | None
    operation_result: str | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "RequestInfo":
        url = str(body.get("requestURL") or "")
        rid = body.get("requestID") or url.rstrip("/").rpartition("/")[2]
        if not rid:
            raise DogtagUnreachable("Dogtag answered a request without a request id")
        cert_id = body.get("certId")
        if cert_id is None and body.get("certURL"):
            cert_id = str(body["certURL"]).rstrip("/").rpartition("/")[2]
        return cls(str(rid), str(body.get("requestStatus") or ""), None if cert_id is None else str(cert_id),
                   body.get("errorMessage"), body.get("operationResult"))


def serial_id(serial: int) -> str:
    """Dogtag takes a certificate id as decimal or 0x-hex; hex matches what it prints."""
    return hex(serial)


class DogtagClient:
    """One Dogtag CA (one replica) at `base_url`, reached with the RA agent's TLS identity.

    aiohttp sessions belong to an event loop: one is opened per loop that uses
    the client (a server worker has one; tests may run several in turn).
    """

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, timeout: float,
                 kra_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.kra_url = kra_url.rstrip("/") if kra_url else None
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = \
            weakref.WeakKeyDictionary()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                                            timeout=self._timeout)
            self._sessions[loop] = session
        return session

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    # --- transport ---------------------------------------------------------------------------

    async def _call(self, method: str, url: str, *, json_body: Any = None, data: Any = None,
                    headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                    accept_404: bool = False) -> tuple[int, str, bytes]:
        """(status, content type, body) of a 2xx answer; DogtagError on 4xx, DogtagUnreachable otherwise."""
        hdrs = dict(JSON_HEADERS if json_body is not None else {"Accept": "application/json"})
        hdrs.update(headers or {})
        payload = json.dumps(json_body).encode() if json_body is not None else data
        try:
            async with self._session().request(method, url, data=payload, headers=hdrs, params=params) as resp:
                # Bounded: a CA's answers are small; a runaway body must not fill the worker's memory.
                body = await read_at_most(resp.content, MAX_ANSWER)
                if len(body) > MAX_ANSWER:
                    raise DogtagUnreachable(f"{url} answered more than {MAX_ANSWER} bytes")
                ctype = resp.content_type
                status = resp.status
        except asyncio.TimeoutError:
            raise DogtagUnreachable(f"no answer from {url} within {self._timeout.total:g}s") from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise DogtagUnreachable(f"{url}: {exc or type(exc).__name__}") from None
        if status >= 500 or status in (408, 429):
            raise DogtagUnreachable(f"{url} answered {status} {_message(body) or ''}".strip())
        if status >= 400 and not (status == 404 and accept_404):
            raise DogtagError(status, _message(body) or f"HTTP {status}", _class_name(body))
        return status, ctype, body

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        _, _, body = await self._call(method, url, **kwargs)
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise DogtagUnreachable(f"{url} answered something that is not JSON") from None

    # --- the CA --------------------------------------------------------------------------------

    async def submit(self, profile_id: str, csr_pem: str, requestor: str) -> RequestInfo:
        """POST /ca/rest/certrequests: a PKCS#10 on `profile_id` (CertEnrollmentRequest)."""
        body = {
            "Attributes": {"Attribute": []},
            "ProfileID": profile_id,
            "Renewal": False,
            "Input": [
                {"id": "i1", "ClassID": "certReqInputImpl", "Name": "Certificate Request Input",
                 "Attribute": [{"name": "cert_request_type", "Value": "pkcs10"},
                               {"name": "cert_request", "Value": csr_pem}]},
                {"id": "i2", "ClassID": "submitterInfoInputImpl", "Name": "Requestor Information",
                 "Attribute": [{"name": "requestor_name", "Value": requestor}]},
            ],
        }
        answer = await self._json("POST", f"{self.base_url}/ca/rest/certrequests", json_body=body)
        entries = (answer or {}).get("entries") or []
        if isinstance(entries, dict):
            entries = [entries]
        if not entries:
            raise DogtagUnreachable("Dogtag accepted the request but listed no request for it")
        return RequestInfo.from_json(entries[0])

    async def request(self, request_id: str) -> RequestInfo | None:
        """GET /ca/rest/certrequests/{id}; None when Dogtag has no such request."""
        url = f"{self.base_url}/ca/rest/certrequests/{quote(request_id, safe='')}"
        status, _, body = await self._call("GET", url, accept_404=True)
        if status == 404:
            return None
        try:
            return RequestInfo.from_json(json.loads(body))
        except ValueError:
            raise DogtagUnreachable(f"{url} answered something that is not JSON") from None

    async def approve(self, request_id: str) -> None:
        """Review (for the nonce) and approve a request as agent."""
        url = f"{self.base_url}/ca/rest/agent/certrequests/{quote(request_id, safe='')}"
        review = await self._json("GET", url)
        await self._call("POST", f"{url}/approve", json_body=review)

    async def certificate_pem(self, cert_id: str) -> tuple[str, str]:
        """(PEM, status) of GET /ca/rest/certs/{id} (CertData.Encoded, CertData.Status)."""
        data = await self._json("GET", f"{self.base_url}/ca/rest/certs/{quote(cert_id, safe='')}")
        encoded = (data or {}).get("Encoded")
        if not encoded:
            raise DogtagUnreachable(f"Dogtag returned certificate {cert_id} without its encoding")
        return encoded, str(data.get("Status") or "")

    async def revoke(self, serial: int, reason: str, comments: str) -> RequestInfo | None:
        """Revoke as agent; None when the certificate was already revoked. DogtagError(404) if unknown."""
        url = f"{self.base_url}/ca/rest/agent/certs/{serial_id(serial)}"
        data = await self._json("GET", url)
        if str((data or {}).get("Status") or "").upper() == "REVOKED":
            return None
        body = {"Reason": reason, "Nonce": data.get("Nonce"), "Comments": comments}
        answer = await self._json("POST", f"{url}/revoke", json_body=body)
        return RequestInfo.from_json(answer) if answer else None

    async def status(self, base: str | None = None, subsystem: str = "ca") -> dict[str, Any]:
        """GET /{subsystem}/admin/{subsystem}/getStatus (the "Response" object)."""
        answer = await self._json("GET", f"{base or self.base_url}/{subsystem}/admin/{subsystem}/getStatus")
        return (answer or {}).get("Response") or {}

    async def host_certificate_pem(self) -> str:
        _, _, body = await self._call("GET", f"{self.base_url}/ca/rest/authorities/host-authority/cert",
                                      headers={"Accept": "application/x-pem-file"})
        return body.decode("ascii", "replace")

    async def server_keygen(self, profile_id: str, password: str, key_type: str, key_size: str,
                            fields: dict[str, str]) -> tuple[str, bytes]:
        """(content type, body) of a server-side keygen enrollment through /ca/ee/ca/profileSubmit."""
        form = {"profileId": profile_id, "serverSideKeygenP12Passwd": password, "p12PasswordAgain": password,
                "keyType": key_type, "keySize": key_size, "renewal": "false", "xmlOutput": "false", **fields}
        _, ctype, body = await self._call("POST", f"{self.base_url}/ca/ee/ca/profileSubmit", data=form,
                                          headers={"Accept": "*/*"})
        return ctype, body

    async def submit_cmc(self, profile_id: str, der: bytes) -> bytes:
        _, _, body = await self._call("POST", f"{self.base_url}/ca/ee/ca/profileSubmitCMCFull", data=der,
                                      params={"profileId": profile_id},
                                      headers={"Content-Type": "application/pkcs7-mime", "Accept": "*/*"})
        return body


def _parsed(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _message(body: bytes) -> str:
    """The one-line Message of a PKIException body, or a short plain-text body."""
    message = _parsed(body).get("Message")
    if message:
        return " ".join(str(message).split())[:300]
    text = body[:200].decode("utf-8", "replace")
    return "" if "<" in text else " ".join(text.split())


def _class_name(body: bytes) -> str:
    return str(_parsed(body).get("ClassName") or "")
