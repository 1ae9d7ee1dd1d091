"""The upstream's CA certificates: fetching /cacerts and putting them in chain order.

An upstream-EST CA publishes what the upstream publishes (RFC 7030 4.1). Its
/cacerts is fetched over TLS authenticated with the configured anchors
(`ca_bundle`; RFC 7030 4.1.1's explicit trust anchor), and the certificates
must form a chain whose every link's signature verifies. A PKCS#7 set has no
order (design.md), so the issuing CA is found by signatures: the CA
certificate that signed none of the others (a pinned `chain` file decides
when there are several).

The fetch at start-up is blocking (build_ca is synchronous, and a reload runs
it from a signal handler inside the event loop, where no second loop can be
started); requests never wait on it.
"""

from __future__ import annotations

import http.client
import ssl

from cryptography import x509

from kipuka.ca.upstream_est_settings import UpstreamSettings
from kipuka.client import wire
from kipuka.client.errors import InvalidResponse
from kipuka.client.verify import find_issuer, is_self_signed

USER_AGENT = "kipuka-ra/0.1"
MAX_BODY = 1024 * 1024
STARTUP_TIMEOUT = 5.0  # the blocking fetch at start-up or reload waits at most this long


class CacertsError(Exception):
    """The upstream's /cacerts could not be had or does not hold a usable chain.

    `dropped`: the upstream accepted the connection and then closed it without an
    answer (a reset, a TLS alert): what a server does to a client certificate it
    does not trust."""

    def __init__(self, reason: str, dropped: bool = False) -> None:
        super().__init__(reason)
        self.dropped = dropped


def parse_cacerts(status: int, content_type: str | None, body: bytes, where: str) -> list[x509.Certificate]:
    if status != 200:
        reason = wire.error_reason(body, content_type, "no reason given")
        raise CacertsError(f"{where} answered {status} to GET /cacerts: {reason}")
    try:
        return wire.certificates(body, f"/cacerts of {where}")
    except InvalidResponse as exc:
        raise CacertsError(str(exc)) from None


def fetch_cacerts(s: UpstreamSettings, ctx: ssl.SSLContext, label: str | None) -> list[x509.Certificate]:
    """GET /cacerts from the upstream, blocking, within STARTUP_TIMEOUT."""
    where = s.url("cacerts", label)
    conn = http.client.HTTPSConnection(s.host, s.port, context=ctx, timeout=min(s.timeout, STARTUP_TIMEOUT))
    try:
        conn.request("GET", s.path("cacerts", label), headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
        resp = conn.getresponse()
        body = resp.read(MAX_BODY)
        status, content_type = resp.status, resp.getheader("Content-Type")
    except ssl.SSLCertVerificationError as exc:
        raise CacertsError(f"the TLS certificate of {s.origin} is not trusted ({exc.verify_message}); "
                           f"check ca_bundle") from None
    except (ssl.SSLError, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
        raise CacertsError(f"cannot GET {where}: {type(exc).__name__} {exc}".strip(), dropped=True) from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise CacertsError(f"cannot GET {where}: {type(exc).__name__} {exc}".strip()) from None
    finally:
        conn.close()
    return parse_cacerts(status, content_type, body, where)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def order_chain(certs: list[x509.Certificate], issuing: x509.Certificate | None = None) -> list[x509.Certificate]:
    """[issuing CA, its issuer, ..., root] followed by any other certificate of the set (rollover links).

    `issuing` (from a pinned chain file) must be in the set; otherwise the issuing
    CA is the CA certificate that signed none of the others, preferring one that is
    not self-signed and, among equals, the upstream's own first.
    """
    cas = [c for c in certs if _is_ca(c)] or list(certs)
    if issuing is None:
        def signed_another(c: x509.Certificate) -> bool:
            return any(o != c and find_issuer(o, [c]) is not None for o in cas)

        leaves = [c for c in cas if not signed_another(c)]
        candidates = [c for c in leaves if not is_self_signed(c)] or leaves or cas
        issuing = certs[0] if certs[0] in candidates else candidates[0]
    elif issuing not in certs:
        raise CacertsError(f"the upstream's /cacerts does not hold the issuing CA {issuing.subject.rfc4514_string()}")
    chain = [issuing]
    while not is_self_signed(chain[-1]):
        parent = find_issuer(chain[-1], [c for c in certs if c not in chain])
        if parent is None:
            break  # the upstream left out the root (RFC 7030 4.1.3 says MUST): publish what there is
        chain.append(parent)
    return chain + [c for c in certs if c not in chain]
