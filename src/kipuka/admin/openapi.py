"""The OpenAPI 3.1 document of the admin API, served at /admin/openapi.json.

Written out by hand next to the handlers it describes (api.py); the test suite
runs schemathesis against it so that the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from kipuka import __version__

STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
NTIME = {"type": ["string", "null"], "format": "date-time"}
DATE_TEXT = {"type": "string", "format": "date-time"}
REASONS = ["unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise"]


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props),
            "additionalProperties": False}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict[str, Any]:
    return _obj({"items": {"type": "array", "items": _ref(item)}, "next_cursor": NSTR,
                 "next": {**NSTR, "description": "pass as after= for the next page (keyset pages)"},
                 "prev": {**NSTR, "description": "pass as before= for the previous page (keyset pages)"}},
                ["items", "next_cursor"])


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR, "message": STR}),
    "Component": _obj({"status": {"type": "string", "enum": ["ok", "degraded", "down"]}, "detail": STR}),
    "Health": _obj({"status": {"type": "string", "enum": ["ok", "degraded", "unhealthy"]},
                    "components": {"type": "object", "additionalProperties": _ref("Component")}}),
    "Live": _obj({"status": {"type": "string", "enum": ["ok"]}}),
    "OtpRequest": {**_obj({"entity": {"type": "string", "pattern": "^[^:\\x00-\\x1f\\x7f]{1,255}$",
                                      "description": "entity id; no ':' or control characters"},
                           "label": {"oneOf": [{"type": ["string", "null"]}, {"type": "array", "items": STR}],
                                     "description": "where the OTP is valid: null, \"\" or absent: the unlabeled "
                                                    "path only; \"any\": every label; an EST label or a list "
                                                    "of them (404 if unknown)"},
                           "ttl": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 3650 * 86400},
                                             {"type": "string",
                                              "pattern": "^([1-9][0-9]{0,2}[smhd]|[1-9][0-9]{0,7}s?)$"}]},
                           "uses": {"type": "integer", "minimum": 1, "maximum": 1000}}, ["entity"])},
    "OtpBulkRequest": _obj({"items": {"type": "array", "items": _ref("OtpRequest"), "minItems": 1,
                                      "maxItems": 1000}}),
    "OtpCreated": _obj({"id": INT, "entity": STR, "label": {"type": "string", "description": "\"\": the unlabeled path; \"any\"; or label names, comma-separated"}, "otp": STR, "uses": INT, "expires_at": TIME}),
    "OtpCreatedList": _obj({"items": {"type": "array", "items": _ref("OtpCreated")}}),
    "Otp": _obj({"id": INT, "entity": STR, "label": {"type": "string", "description": "\"\": the unlabeled path; \"any\"; or label names, comma-separated"}, "uses_total": INT, "uses_left": INT,
                 "created_at": TIME, "expires_at": TIME,
                 "status": {"type": "string", "enum": ["active", "spent", "expired", "revoked"]},
                 "certificates": {**INT, "description": "certificates it produced (keyset pages only)"}},
                ["id", "entity", "label", "uses_total", "uses_left", "created_at", "expires_at", "status"]),
    "OtpPage": _page("Otp"),
    "Request": _obj({"id": INT, "op": STR, "label": STR, "ca": STR, "entity": STR, "auth": STR,
                     "client_addr": STR, "subject": STR, "sans": STR,
                     "status": {"type": "string", "enum": ["pending", "issued", "rejected", "expired"]},
                     "reason": STR, "created_at": TIME, "expires_at": TIME, "decided_at": NTIME,
                     "decided_by": NSTR, "serial": NSTR, "ca_ref": NSTR,
                     "requester": {**STR, "description": "otp:<entity> or cert:<SHA-256 of the client certificate>"},
                     "key": {**STR, "description": "the CSR's public key, e.g. EC P-256 or RSA 2048"},
                     "csr": {**_ref("DecodedCsr"), "description": "one request only: the whole CSR"}},
                    ["id", "op", "label", "ca", "entity", "auth", "client_addr", "subject", "sans", "status",
                     "reason", "created_at", "expires_at", "decided_at", "decided_by", "serial", "ca_ref",
                     "requester", "key"]),
    "DecodedCsr": _obj({"readable": {"type": "boolean"}, "subject": STR, "sans": {"type": "array", "items": STR},
                        "public_key": STR, "signature_algorithm": STR, "signature_valid": {"type": "boolean"},
                        "linked": {"type": "boolean", "description": "carries the TLS channel binding (RFC 7030 "
                                                                     "3.5) as its challengePassword"},
                        "extensions": {"type": "array", "items": _obj({
                            "name": STR, "oid": STR, "critical": {"type": "boolean"}, "value": STR})},
                        "attributes": {"type": "array", "items": STR}}),
    "RequestPage": _page("Request"),
    "Approved": _obj({"request": _ref("Request"), "certificate": _ref("Certificate")}),
    "HeldByCA": _obj({"request": _ref("Request"), "certificate": {"type": "null"}, "ca_ref": STR}),
    "Reject": _obj({"reason": {"type": "string", "minLength": 1, "maxLength": 10000}}),
    "Revoke": _obj({"reason": {"type": "string", "enum": REASONS}}, []),
    "Certificate": _obj({"serial": STR, "ca": STR, "label": STR, "subject": STR, "sans": STR, "entity": STR,
                         "auth": STR, "not_before": TIME, "not_after": TIME, "issued_at": TIME,
                         "status": {"type": "string", "enum": ["valid", "revoked", "expired"]},
                         "revoked_at": NTIME, "revocation_reason": NSTR, "sha256": STR,
                         "pem": STR, "decoded": _ref("DecodedCertificate"),
                         "replaces_serial": {**NSTR, "description": "the certificate this renewal replaced"},
                         "superseded": {"type": "boolean", "description": "a renewal replaced it"},
                         "renewed_from": {"oneOf": [_ref("Certificate"), {"type": "null"}]},
                         "superseded_by": {"type": "array", "items": _ref("Certificate")},
                         "chain": {"type": "array", "items": _ref("CertSummary")},
                         "crl": {"oneOf": [_obj({"number": INT, "this_update": TIME, "next_update": TIME}),
                                           {"type": "null"}]},
                         "idevid": {"oneOf": [_ref("Pledge"), {"type": "null"}],
                                    "description": "the BRSKI pledge (IDevID) this LDevID was issued to"}},
                        ["serial", "ca", "label", "subject", "sans", "entity", "auth", "not_before",
                                       "not_after", "issued_at", "status", "revoked_at", "revocation_reason",
                                       "sha256"]),
    "CertificatePage": _page("Certificate"),
    "Count": _obj({"count": INT}),
    "BulkRevoke": {"oneOf": [
        _obj({"reason": {"type": "string", "enum": REASONS},
              "serials": {"type": "array", "items": {"type": "string", "pattern": "^(0x)?[0-9A-Fa-f]{1,42}$"},
                          "minItems": 1, "maxItems": 10000}}),
        _obj({"reason": {"type": "string", "enum": REASONS},
              "filter": {**_obj({**{name: {"type": "string", "maxLength": 200} for name in (
                  "subject", "subject_prefix", "subject_contains", "serial", "san", "q", "entity", "label", "ca")},
                  "otp": {"type": "string", "pattern": "^[0-9]{1,17}$"},
                  "status": {"type": "string", "enum": ["valid", "revoked", "expired"]},
                  **{name: DATE_TEXT for name in ("issued_after", "issued_before", "expires_after",
                                                  "expires_before")}}, []),
                         "description": "the query parameters of GET /admin/certs"},
              "count": {"type": "integer", "minimum": 0, "maximum": 10000,
                        "description": "how many certificates the officer confirmed (409 if it changed)"}}),
    ]},
    "BulkRevoked": _obj({"revoked": {**INT, "description": "revoked now (already revoked ones are left)"},
                         "serials": {"type": "array", "items": STR}}),
    "OtpBulkRevoke": _obj({"ids": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 10 ** 17},
                                   "minItems": 1, "maxItems": 10000}}),
    "OtpBulkRevoked": _obj({"revoked": INT, "ids": {"type": "array", "items": INT}}),
    "Dashboard": _obj({"at": TIME, "pending": INT,
                       "expiring": {"type": "array", "items": _obj({"label": STR, "days_7": INT, "days_30": INT,
                                                                    "days_90": INT})},
                       "cas": {"type": "array", "items": {"type": "object"}},
                       "rates": _obj({"issued_hour": INT, "issued_day": INT, "failed_hour": INT,
                                      "failed_day": INT})}),
    # BRSKI (RFC 8995): devices known by their IDevID, and which of them this domain owns
    "Pledge": _obj({"id": INT, "manufacturer": STR, "serial_number": STR, "idevid_subject": STR,
                    "idevid_sha256": STR,
                    "status": {"type": "string", "enum": ["owned", "pending", "approved", "rejected"]},
                    "label": STR, "reason": STR, "decided_by": NSTR, "created_at": TIME, "decided_at": NTIME,
                    "client_addr": STR, "masa_url": STR, "voucher_at": NTIME, "voucher_status": NSTR,
                    "enroll_status": NSTR,
                    "ldevids": {"type": "array", "items": _obj({"ca": STR, "serial": STR})},
                    "voucher": {**NSTR, "description": "the last voucher, base64 of its CMS"}},
                   ["id", "manufacturer", "serial_number", "idevid_subject", "idevid_sha256", "status", "label",
                    "reason", "decided_by", "created_at", "decided_at", "client_addr", "masa_url", "voucher_at",
                    "voucher_status", "enroll_status"]),
    "PledgePage": _page("Pledge"),
    "PledgeApprove": _obj({"label": {**STR, "description": "the EST label its LDevID comes from"}}, []),
    "OwnershipRule": _obj({"id": {"type": ["integer", "null"], "description": "null for a configuration rule"},
                           "manufacturer": STR, "pattern": STR, "label": STR,
                           "source": {"type": "string", "enum": ["config", "api"]}, "created_by": NSTR,
                           "created_at": NTIME}),
    "OwnershipRuleList": _obj({"items": {"type": "array", "items": _ref("OwnershipRule")}}),
    "OwnershipRuleRequest": _obj({"manufacturer": {**STR, "maxLength": 64},
                                  "pattern": {**STR, "minLength": 1, "maxLength": 128,
                                              "description": "serial-number pattern (fnmatch: * ? [...])"},
                                  "label": STR}, ["manufacturer", "pattern"]),
    "DecodedCertificate": _obj({"version": STR, "serial_hex": STR, "subject": STR, "issuer": STR, "not_before": TIME,
                                "not_after": TIME, "public_key": STR, "signature_algorithm": STR, "sha1": STR,
                                "sha256": STR, "extensions": {"type": "array", "items": _obj({
                                    "name": STR, "oid": STR, "critical": {"type": "boolean"}, "value": STR})}}),
    "CertSummary": _obj({"subject": STR, "issuer": STR, "not_after": TIME, "sha256": STR}),
    "Replica": _obj({"name": STR, "status": {"type": "string", "enum": ["ok", "down"]}, "detail": STR}),
    "CrlStatus": _obj({"number": INT, "this_update": TIME, "next_update": TIME, "entries": INT,
                       "fresh": {"type": "boolean"}}),
    "Label": _obj({"name": {**STR, "description": "empty for the unlabeled path"}, "path": STR, "ca": STR,
                   "ca_type": STR, "policy": {"type": "object", "description": "every policy key (configuration.md)"}}),
    "LabelList": _obj({"items": {"type": "array", "items": _ref("Label")}}),
    "HourCount": _obj({"start": TIME, "issued": INT, "failed": INT}),
    "IssuanceStats": _obj({"since": TIME, "until": TIME, "items": {"type": "array", "items": _ref("HourCount")},
                           "pending": {**INT, "description": "requests waiting for approval now"}}),
    "CA": _obj({"id": STR, "type": STR, "labels": {"type": "array", "items": STR}, "subject": STR,
                "not_after": TIME, "chain": {"type": "array", "items": STR}, "health": STR,
                "crl_urls": {"type": "array", "items": STR}, "ocsp_urls": {"type": "array", "items": STR},
                "replicas": {"type": "array", "items": _ref("Replica"), "description": "empty unless a pool"},
                "chain_info": {"type": "array", "items": _ref("CertSummary")},
                "publishes_revocation": {"type": "boolean", "description": "false: the remote CA publishes its own"},
                "crl": {"oneOf": [_ref("CrlStatus"), {"type": "null"}]},
                "ocsp_responder": NSTR}),
    "CAList": _obj({"items": {"type": "array", "items": _ref("CA")}}),
    "AuditEvent": _obj({"id": INT, "at": TIME, "event": STR, "outcome": STR, "reason": STR, "label": STR,
                        "entity": STR, "client_addr": STR, "auth": STR, "ca": STR, "serial": STR,
                        "chain_seq": {"type": ["integer", "null"]}, "hash": NSTR}),
    "AuditPage": _page("AuditEvent"),
    "ChainCheck": _obj({"ok": {"type": "boolean"}, "checked": INT, "unchained": INT,
                        "broken_id": {"type": ["integer", "null"]}, "broken_seq": {"type": ["integer", "null"]},
                        "problem": STR}),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid parameters or body", 401: "no or bad credentials",
            403: "a browser's request from another origin, or without the console's CSRF token", 404: "not found",
            409: "not in a state that allows this", 413: "body too large", 500: "server failure"}
    return {str(c): _json("Error", text[c]) for c in (401, 500, *codes)}


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


PAGING = [_q("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "next_cursor of the previous page"),
          _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})]
ID = _p("id", {"type": "integer", "minimum": 1, "maximum": 10 ** 17})
SERIAL = _p("serial", {"type": "string", "pattern": "^(0x)?[0-9A-Fa-f]{1,40}$"})
FILTER = {"type": "string", "maxLength": 200}
DATE = {"type": "string", "format": "date-time"}
ROW = {"type": "string", "pattern": "^[0-9]{1,17}$"}
KEYSET = [_q("after", ROW, "next of the previous page (a row id)"),
          _q("before", ROW, "prev of the next page (a row id; ignored with after)")]
CERT_FILTERS = [
    _q("subject", FILTER, "exact RFC 4514 subject"), _q("subject_prefix", FILTER),
    _q("subject_contains", FILTER, "a part of the subject, any case"), _q("serial", FILTER, "hexadecimal"),
    _q("san", FILTER, "a part of a subjectAltName, any case"), _q("q", FILTER, "serial, SAN or subject"),
    _q("otp", {"type": "integer", "minimum": 0, "maximum": 10 ** 17}, "certificates an OTP produced"),
    _q("entity", FILTER), _q("label", FILTER), _q("ca", FILTER),
    _q("status", {"type": "string", "enum": ["valid", "revoked", "expired"]}),
    _q("issued_after", DATE), _q("issued_before", DATE),
    _q("expires_after", DATE, "not_after at or after"), _q("expires_before", DATE, "not_after before")]
CERT_SORT = [_q("sort", {"type": "string", "enum": ["issued", "expires", "subject"]}),
             _q("order", {"type": "string", "enum": ["asc", "desc"]})]
ORDER = _q("order", {"type": "string", "enum": ["asc", "desc"]})


def _op(summary: str, responses: dict[str, Any], params: list[dict[str, Any]] | None = None,
        body: str | None = None, body_required: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, "parameters": params or []}
    if body:
        schema = _ref(body) if not body.startswith("oneOf:") else {
            "oneOf": [_ref(b) for b in body[6:].split(",")]}
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": schema}}}
    return op


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "kipuka admin API", "version": __version__,
                 "description": "Operate a kipuka EST server. Errors are JSON {error, message}."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "console": {"type": "apiKey", "in": "cookie", "name": "__Host-kipuka-console",
                        "description": "the web console's session (POST /console/login); state-changing "
                                       "requests also need the X-CSRF-Token header"}}},
        "security": [{"bearer": []}, {"console": []}],
        "paths": {
            "/admin/openapi.json": {"get": _op("this document", {"200": {"description": "OpenAPI document",
                                                                         "content": {"application/json": {}}},
                                                                  **_errors()})},
            "/admin/health": {"get": _op("status of the database and each CA", {
                "200": _json("Health", "per-component status"), **_errors()})},
            "/admin/health/live": {"get": {**_op("the process answers", {"200": _json("Live", "alive"),
                                                                         "500": _json("Error", "failure")}),
                                           "security": []}},
            "/admin/health/ready": {"get": _op("ready to serve", {
                "200": _json("Health", "ready (ok or degraded)"), "503": _json("Health", "not ready"),
                **_errors()})},
            "/admin/otp": {
                "post": _op("create one OTP, or many with {items: [...]}; secrets are shown only here", {
                    "201": _json("OtpCreatedList", "created"), **_errors(400, 403, 404, 413)},
                    body="oneOf:OtpRequest,OtpBulkRequest"),
                "get": _op("list OTPs (never their secrets)", {"200": _json("OtpPage", "a page"), **_errors(400)},
                           [_q("entity", FILTER),
                            _q("status", {"type": "string", "enum": ["active", "spent", "expired", "revoked"]}),
                            ORDER, *KEYSET, *PAGING]),
            },
            "/admin/otp/{id}": {"delete": _op("revoke an OTP", {"204": {"description": "revoked"},
                                                                **_errors(400, 403, 404)}, [ID])},
            "/admin/requests": {"get": _op("requests held for approval", {
                "200": _json("RequestPage", "a page"), **_errors(400)},
                [_q("status", {"type": "string", "enum": ["pending", "issued", "rejected", "expired", "all"]}),
                 _q("label", FILTER), _q("entity", FILTER), ORDER, *KEYSET, *PAGING])},
            "/admin/requests/{id}": {"get": _op("one request", {"200": _json("Request", "the request"),
                                                                **_errors(400, 404)}, [ID])},
            "/admin/requests/{id}/approve": {"post": _op("approve and issue", {
                "200": _json("Approved", "issued"),
                "202": _json("HeldByCA", "approved here; the remote CA holds it as ca_ref (the requester's "
                             "retry collects the certificate)"), **_errors(400, 403, 404, 409, 413)}, [ID])},
            "/admin/requests/{id}/reject": {"post": _op("reject with a reason", {
                "200": _json("Request", "rejected"), **_errors(400, 403, 404, 409, 413)}, [ID], body="Reject")},
            "/admin/certs": {"get": _op("search issued certificates (keyset pagination)", {
                "200": _json("CertificatePage", "a page"), **_errors(400)},
                [*CERT_FILTERS, *CERT_SORT, *KEYSET, *PAGING])},
            "/admin/certs/count": {"get": _op("how many certificates a search matches", {
                "200": _json("Count", "the count"), **_errors(400)}, CERT_FILTERS)},
            "/admin/certs/export": {"get": _op("every certificate a search matches, as CSV", {
                "200": {"description": "RFC 4180 CSV with a header row", "content": {"text/csv": {"schema": STR}}},
                **_errors(400)}, [*CERT_FILTERS, *CERT_SORT])},
            "/admin/bulk/revoke-certs": {"post": _op("revoke a selection, or every certificate of a search", {
                "200": _json("BulkRevoked", "revoked"), **_errors(400, 403, 404, 409, 413)}, body="BulkRevoke")},
            "/admin/bulk/revoke-otps": {"post": _op("revoke many OTPs", {
                "200": _json("OtpBulkRevoked", "revoked"), **_errors(400, 403, 413)}, body="OtpBulkRevoke")},
            "/admin/dashboard": {"get": _op("expiring certificates, CA expiry, CRLs, OCSP and rates", {
                "200": _json("Dashboard", "the figures"), **_errors(400)})},
            "/admin/certs/{serial}": {"get": _op("one certificate with its PEM and decoded fields", {
                "200": _json("Certificate", "the certificate"), **_errors(400, 404)}, [SERIAL])},
            "/admin/certs/{serial}/revoke": {"post": _op("revoke with an RFC 5280 reason", {
                "200": _json("Certificate", "revoked"), **_errors(400, 403, 404, 409, 413)}, [SERIAL],
                body="Revoke", body_required=False)},
            "/admin/ca": {"get": _op("CAs, their chains and health", {"200": _json("CAList", "CAs"), **_errors()})},
            "/admin/ca/{id}": {"get": _op("one CA", {"200": _json("CA", "the CA"), **_errors(404)},
                                          [_p("id", {"type": "string", "maxLength": 64})])},
            "/admin/labels": {"get": _op("EST labels, their CA, back-end type and policy", {
                "200": _json("LabelList", "labels"), **_errors()})},
            "/admin/stats/issuance": {"get": _op("certificates issued and requests failed per UTC hour", {
                "200": _json("IssuanceStats", "one item per hour, the current hour last"), **_errors(400)},
                [_q("hours", {"type": "integer", "minimum": 1, "maximum": 168}, "how many hours (default 24)")])},
            "/admin/brski/pledges": {"get": _op("BRSKI pledges (devices known by their IDevID)", {
                "200": _json("PledgePage", "a page"), **_errors(400, 404)},
                [_q("status", {"type": "string", "enum": ["owned", "pending", "approved", "rejected", "all"]}),
                 *PAGING])},
            "/admin/brski/pledges/{id}": {"get": _op("one pledge, its LDevIDs and last voucher", {
                "200": _json("Pledge", "the pledge"), **_errors(400, 404)}, [ID])},
            "/admin/brski/pledges/{id}/approve": {"post": _op("let a held pledge get a voucher", {
                "200": _json("Pledge", "approved"), **_errors(400, 403, 404, 409, 413)}, [ID],
                body="PledgeApprove", body_required=False)},
            "/admin/brski/pledges/{id}/reject": {"post": _op("refuse a pledge its voucher and enrollment", {
                "200": _json("Pledge", "rejected"), **_errors(400, 403, 404, 409, 413)}, [ID], body="Reject")},
            "/admin/brski/ownership": {
                "get": _op("ownership rules: from the configuration and from this API", {
                    "200": _json("OwnershipRuleList", "rules"), **_errors(404)}),
                "post": _op("add an ownership rule", {"201": _json("OwnershipRule", "added"),
                                                      **_errors(400, 403, 404, 409, 413)},
                            body="OwnershipRuleRequest")},
            "/admin/brski/ownership/{id}": {"delete": _op("remove an ownership rule", {
                "204": {"description": "removed"}, **_errors(400, 403, 404)}, [ID])},
            "/admin/audit": {"get": _op("the audit trail, newest first", {
                "200": _json("AuditPage", "a page"), **_errors(400)},
                [_q("event", FILTER), _q("outcome", FILTER), _q("entity", FILTER), _q("label", FILTER),
                 _q("actor", FILTER, "who acted: otp, mtls, token:NAME, cert:SUBJECT"),
                 _q("since", DATE), _q("until", DATE), *KEYSET, *PAGING])},
            "/admin/audit/verify": {"get": _op("link pending rows and verify the audit hash chain", {
                "200": _json("ChainCheck", "result"), **_errors()})},
            "/metrics": {"get": _op("Prometheus metrics", {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}},
                **_errors()})},
        },
    }
