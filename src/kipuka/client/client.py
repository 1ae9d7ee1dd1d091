"""`EstClient`: the six EST operations of RFC 7030 (with RFC 8951) from the client side.

    from kipuka.client import EstClient, CsrSpec, generate_key

    with EstClient("https://est.example.com:9443", label="iot-fleet",
                   trust="ca-chain.pem", auth=("device-001", otp)) as est:
        key = generate_key("ec-p256")
        issued = est.simpleenroll(CsrSpec.for_names(key, "device-001.example.com"))
        issued.certificate, issued.chain

The client is synchronous and built on the standard library (see
`kipuka.client.transport` for why); it keeps one keep-alive connection.

Trust, in order of precedence:
- `trust=` explicit anchors (a PEM file path, PEM bytes, or certificates):
  TLS is verified against them; with `fingerprint=` as well, the /cacerts
  answer must also contain the certificate with that SHA-256 (a pin).
- `fingerprint=` alone: RFC 7030 4.1.1 bootstrap. /cacerts is fetched over a
  TLS connection that is NOT authenticated, the certificate with that SHA-256
  (root or issuing CA, checked out of band) must be in the answer, and the
  certificates joined to it by signatures become the explicit trust anchors;
  the next connection is verified against them. No credentials are ever sent
  on the unauthenticated connection.
- neither: the system's default CAs. `bootstrap()` without a fingerprint is
  refused (BootstrapError), never done blindly.

Authentication: `auth=(entity, otp)` is sent as HTTP Basic with every POST
(`auth_mode="preemptive"`, the default) or only in answer to a 401 challenge
(`auth_mode="challenge"`, what libest and Bouncy Castle clients do);
`client_cert=(cert, key)` presents a TLS client certificate (paths, PEM
bytes or cryptography objects).

Every answer is checked: the PKCS#7 must parse, the issued certificate must
carry the CSR's public key, and its issuer's signature must verify against a
certificate from /cacerts of the same label (fetched on demand over the
verified connection) or from the trust anchors. Failures raise the typed
errors of `kipuka.client.errors`, with the server's own reason text.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.name import _ASN1Type

from kipuka.client import verify, wire
from kipuka.client.csr import ASYMMETRIC_DECRYPT_KEY_ID, DECRYPT_KEY_ID, CsrInput, CsrSource
from kipuka.client.errors import BootstrapError, ChannelBindingError, EstError, InvalidResponse
from kipuka.client.exchange import EstHttp, _split_url, wire_body
from kipuka.client.results import CmcResponse, Issued, ServerKeygenResult
from kipuka.client.serverkeygen import (CSR_KEY, PKCS8, AsymmetricDecryptKey, Delivery, SymmetricDecryptKey,
                                        open_key)
from kipuka.client.transport import ClientIdentity, Response, TlsSettings, Transport
from kipuka.client.trust import TrustInput, load_trust

log = logging.getLogger("kipuka.client")


class EstClient(EstHttp):
    """The EST operations against one server and label; the HTTP mechanics come from `EstHttp` (exchange.py)."""

    def __init__(self, base_url: str, label: str | None = None, *, trust: TrustInput = None,
                 fingerprint: str | None = None, client_cert: tuple[object, object] | None = None,
                 auth: tuple[str, str] | None = None, auth_mode: str = "preemptive",
                 channel_binding: bool | str = False, timeout: float = 30.0, max_wait: float = 300.0,
                 verify_chain: bool = True, on_progress: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        if auth_mode not in ("preemptive", "challenge"):
            raise ValueError("auth_mode must be 'preemptive' or 'challenge'")
        self.host, self.port, prefix, url_label = _split_url(base_url)
        self.prefix = prefix
        self.label = label if label is not None else url_label
        if self.label is not None and (not self.label or "/" in self.label):
            raise EstError(f"invalid EST label {self.label!r}")
        self.fingerprint = verify.normalise_fingerprint(fingerprint) if fingerprint else None
        self.auth = auth
        self.auth_mode = auth_mode
        self.channel_binding = channel_binding
        self.max_wait = max_wait
        self.verify_chain = verify_chain
        self.on_progress = on_progress or (lambda msg: log.info("%s", msg))
        self._sleep = sleep
        self._clock = clock
        self.timeout = timeout
        self._anchors: list[x509.Certificate] | None = load_trust(trust)
        self._bootstrapped = False
        self._identity = ClientIdentity(*client_cert) if client_cert is not None else None
        self._cacerts: dict[str | None, list[x509.Certificate]] = {}
        self._transport = Transport(self.host, self.port, self._settings(), timeout)

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "EstClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()
        if self._identity is not None:
            self._identity.close()

    @property
    def bootstrapped(self) -> bool:
        """Trust came from a fingerprint bootstrap on this client (keep `trust_anchors` for next time)."""
        return self._bootstrapped

    @property
    def trust_anchors(self) -> list[x509.Certificate] | None:
        """The explicit anchors in use (after a bootstrap: the accepted CA certificates); None = system CAs."""
        return list(self._anchors) if self._anchors is not None else None

    def _settings(self, verify_tls: bool = True) -> TlsSettings:
        anchors = None
        if self._anchors is not None:
            anchors = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self._anchors)
        return TlsSettings(anchors=anchors, verify=verify_tls,
                           client_cert=self._identity.paths if self._identity and verify_tls else None,
                           tls12_only=self.channel_binding == "tls-unique")

    # --- trust bootstrap (RFC 7030 4.1.1) -------------------------------------------------

    def bootstrap(self, fingerprint: str | None = None) -> list[x509.Certificate]:
        """Fetch /cacerts without authenticating the server; keep what the fingerprint vouches for."""
        expected = verify.normalise_fingerprint(fingerprint) if fingerprint else self.fingerprint
        if not expected:
            raise BootstrapError("refusing to fetch /cacerts over an unauthenticated TLS connection without "
                                 "the SHA-256 fingerprint of the root or issuing CA certificate to check it "
                                 "against (RFC 7030 4.1.1); give the fingerprint, or trust anchors")
        self.on_progress(f"bootstrap: fetching {self.url('cacerts')} without server authentication")
        transport = Transport(self.host, self.port, self._settings(verify_tls=False), self.timeout)
        try:
            resp = self._exchange(transport, "GET", "cacerts", allow_auth=False)
        finally:
            transport.close()
        certs = self._certs_of(resp, "cacerts")
        accepted = verify.bootstrap_set(certs, expected)
        dropped = len(certs) - len(accepted)
        self._anchors = accepted
        self._bootstrapped = True
        self._cacerts[self.label] = certs if not dropped else accepted
        self._transport.reconfigure(self._settings())
        self.on_progress(f"bootstrap: fingerprint matches {accepted[0].subject.rfc4514_string()}; "
                         f"{len(accepted)} CA certificate(s) are now the trust anchors"
                         + (f" ({dropped} unrelated certificate(s) ignored)" if dropped else ""))
        try:  # the very next connection must authenticate the server with the new anchors
            self._transport._connection()
        except EstError as exc:
            raise BootstrapError(f"CA certificates accepted, but the server's TLS certificate does not verify "
                                 f"against them: {exc.reason}") from None
        return accepted

    # --- operations -----------------------------------------------------------------------

    def cacerts(self) -> list[x509.Certificate]:
        """GET /cacerts: the CA certificates of the label (bootstrapping trust first if so configured)."""
        if self._anchors is None and self.fingerprint and not self._bootstrapped:
            self.bootstrap()
            return list(self._cacerts[self.label])
        resp = self._call("GET", "cacerts", allow_auth=False)
        certs = self._certs_of(resp, "cacerts")
        if self.fingerprint:
            verify.bootstrap_set(certs, self.fingerprint)  # the pin must be in the answer
        self._cacerts[self.label] = certs
        return certs

    def csrattrs(self) -> wire.CsrAttributes:
        """GET /csrattrs; an empty result for 204 (the server asks for nothing)."""
        resp = self._call("GET", "csrattrs", allow_auth=True, preemptive=False)
        if resp.status == 204 or not resp.body.strip():
            return wire.CsrAttributes()
        self._check_media(resp, "csrattrs", lambda mt: mt.type in (wire.CSRATTRS, "application/octet-stream", ""))
        return wire.csr_attributes(wire.decode_body(resp.body, "csrattrs", resp.header("content-transfer-encoding")))

    def simpleenroll(self, csr: CsrInput) -> Issued:
        return self._enroll("simpleenroll", csr)

    def simplereenroll(self, csr: CsrInput) -> Issued:
        return self._enroll("simplereenroll", csr)

    def serverkeygen(self, csr: CsrInput, delivery: Delivery = PKCS8) -> ServerKeygenResult:
        """POST /serverkeygen; returns the certificate and the (decrypted) server-generated key.

        delivery: PKCS8 (plain application/pkcs8 over TLS, RFC 7030's default), CSR_KEY (CMS
        encrypted to the CSR's key, kipuka's extension, asked for with an AsymmetricDecryptKeyIdentifier
        naming that key; needs a CsrSpec so the client holds that key), or an AsymmetricDecryptKey /
        SymmetricDecryptKey, whose identifier is added to the CSR when it is a CsrSpec.
        """
        source = CsrSource.of(csr)
        if isinstance(delivery, (AsymmetricDecryptKey, SymmetricDecryptKey)) and source.spec is not None:
            oid = ASYMMETRIC_DECRYPT_KEY_ID if isinstance(delivery, AsymmetricDecryptKey) else DECRYPT_KEY_ID
            source = CsrSource(spec=source.spec.with_attribute(oid, delivery.key_id, _ASN1Type.OctetString))
        if delivery == CSR_KEY:
            if source.spec is None:
                raise EstError("delivery 'csr-key' needs a CsrSpec: the client must hold the CSR's private key")
            # Asked for by name (AsymmetricDecryptKeyIdentifier = the CSR key's identifier): a server
            # whose default for a CSR that names no key is application/pkcs8 (RFC 7030 4.4.2) still
            # encrypts to the CSR's key where it allows that, instead of sending the key in clear.
            kid = x509.SubjectKeyIdentifier.from_public_key(source.spec.key.public_key()).digest
            source = CsrSource(spec=source.spec.with_attribute(ASYMMETRIC_DECRYPT_KEY_ID, kid,
                                                               _ASN1Type.OctetString))
        resp = self._call("POST", "serverkeygen", body=self._csr_body(source), content_type=wire.PKCS10)
        media = wire.parse_media_type(resp.header("content-type"))
        if media.type != wire.MULTIPART_MIXED:
            raise InvalidResponse(f"serverkeygen: expected multipart/mixed, got {media.type or 'no Content-Type'}")
        cert_parts, key_parts = [], []
        for part in wire.multipart(resp.body, media):
            pm = part.media
            if pm.type in (wire.PKCS7_MIME, "application/x-pkcs7-mime") and pm.smime_type == "server-generated-key":
                key_parts.append(part)
            elif pm.type == wire.PKCS8:
                key_parts.append(part)
            elif wire.is_certs_media(pm):
                cert_parts.append(part)
        if len(cert_parts) != 1 or len(key_parts) != 1:
            kinds = ", ".join(str(p.media) or "untyped" for p in wire.multipart(resp.body, media))
            raise InvalidResponse(f"serverkeygen: expected one certificate part and one key part, got: {kinds}")
        key_part = key_parts[0]
        key_der = wire.decode_body(key_part.body, "serverkeygen key part", key_part.transfer_encoding)
        opened = open_key(key_part.media, key_der, delivery, source)
        certs = wire.certificates(cert_parts[0].body, "serverkeygen certificate part", cert_parts[0].transfer_encoding)
        leaf = _leaf_for_key(certs, opened.private_key.public_key())  # type: ignore[attr-defined]
        if leaf is None:
            raise InvalidResponse("serverkeygen: the certificate does not carry the public key of the returned key")
        chain = self._verify_issued(leaf, certs)
        return ServerKeygenResult(leaf, chain, certs, private_key=opened.private_key,
                                  key_media_type=str(key_part.media), encrypted=key_part.media.type != wire.PKCS8,
                                  signed=opened.signed, key_signer=opened.signer)

    def fullcmc(self, request: bytes) -> CmcResponse:
        """POST /fullcmc with a DER CMS PKIData; the PKIResponse is returned undecoded (plus its certificates).

        An error status whose body is a CMC response (RFC 7030 4.3.2) is returned
        too, with `.status` set, so its statusInfoV2 can be read; any other error
        raises as for the other operations.
        """
        resp = self._call("POST", "fullcmc", body=lambda _t: wire_body(request), content_type=wire.CMC_REQUEST,
                          keep=lambda r: wire.parse_media_type(r.header("content-type")).smime_type == "cmc-response")
        self._check_media(resp, "fullcmc", lambda mt: mt.type in (wire.PKCS7_MIME, "application/x-pkcs7-mime", "")
                          and mt.smime_type in ("", "cmc-response"))
        der = wire.decode_body(resp.body, "fullcmc", resp.header("content-transfer-encoding"))
        try:
            certs = wire.certificates(der, "fullcmc")
        except InvalidResponse:
            certs = []
        return CmcResponse(der, certs, resp.status)

    # --- internals: enrollment ------------------------------------------------------------

    def _enroll(self, op: str, csr: CsrInput) -> Issued:
        source = CsrSource.of(csr)
        resp = self._call("POST", op, body=self._csr_body(source), content_type=wire.PKCS10)
        certs = self._certs_of(resp, op)
        leaf = _leaf_for_key(certs, source.public_key)
        if leaf is None:
            raise InvalidResponse(f"{op}: no returned certificate carries the CSR's public key")
        chain = self._verify_issued(leaf, certs)
        return Issued(leaf, chain, certs)

    def _csr_body(self, source: CsrSource) -> Callable[[Transport], bytes]:
        if self.channel_binding and not source.can_bind:
            raise ChannelBindingError("channel binding needs a CsrSpec (key and names): the CSR is signed after "
                                      "the TLS handshake, with tls-unique in its challengePassword")

        def body(transport: Transport) -> bytes:
            tls_unique = transport.tls_unique() if self.channel_binding else None
            return wire_body(source.der(tls_unique))
        return body

    def _verify_issued(self, leaf: x509.Certificate, response_certs: list[x509.Certificate]) -> list[x509.Certificate]:
        if not self.verify_chain:
            return [c for c in response_certs if c is not leaf]
        known = [*response_certs, *self._cacerts.get(self.label, []), *(self._anchors or [])]
        issuer = verify.find_issuer(leaf, [c for c in known if c is not leaf])
        if issuer is None and self.label not in self._cacerts:
            self.cacerts()  # over the verified connection: explicit anchors for this label (RFC 7030 4.1.3)
            known = [*response_certs, *self._cacerts.get(self.label, []), *(self._anchors or [])]
        chain = verify.build_chain(leaf, [c for c in known if c is not leaf])
        return chain[1:]

    # --- internals: HTTP (the exchange itself is EstHttp's, in exchange.py) -----------------

    def _call(self, method: str, op: str, *, body: Callable[[Transport], bytes] | None = None,
              content_type: str | None = None, allow_auth: bool = True, preemptive: bool = True,
              keep: Callable[[Response], bool] | None = None) -> Response:
        if self._anchors is None and self.fingerprint and not self._bootstrapped:
            self.bootstrap()
        return self._exchange(self._transport, method, op, body=body, content_type=content_type,
                              allow_auth=allow_auth, preemptive=preemptive, keep=keep)


# --- helpers -------------------------------------------------------------------------------

def _leaf_for_key(certs: list[x509.Certificate], public_key: object) -> x509.Certificate | None:
    for cert in certs:
        try:
            if verify.same_public_key(cert.public_key(), public_key):
                return cert
        except (ValueError, TypeError):
            continue
    return None
