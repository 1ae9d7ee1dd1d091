"""Linking identity and proof of possession (RFC 7030 §3.5).

A CSR whose challengePassword carries base64 of the TLS session's channel
binding proves that the key holder is the party on this TLS connection.
TLS 1.2 uses tls-unique (RFC 7030); TLS 1.3 has no tls-unique, so kipuka
accepts tls-exporter (RFC 9266) there — a kipuka extension.
"""

from __future__ import annotations

import base64
import hmac
from typing import Callable

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from kipuka.config import Policy
from kipuka.errors import BadRequest


def challenge_password(csr: x509.CertificateSigningRequest) -> bytes | None:
    try:
        return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except (x509.AttributeNotFound, ValueError):
        return None


def check_linking(csr: x509.CertificateSigningRequest, binding_of: Callable[[], tuple[str, bytes] | None],
                  policy: Policy, exempt: bool | Callable[[], bool]) -> None:
    """Raise BadRequest unless the CSR is linked as the policy requires.

    A challengePassword present is checked (RFC 7030 §3.5), and its absence is
    refused where the label requires linking. RA clients are exempt from both
    (RFC 7030 §3.7): a CSR an RA forwards was linked, if at all, to the device's
    TLS session with the RA, which this server cannot see; the RA checked it.
    `exempt` may be a callable, asked only when there is something to check.
    """
    password = challenge_password(csr)
    if password is None and not policy.require_linking:
        return
    if exempt() if callable(exempt) else exempt:
        return
    if password is None:
        if policy.require_linking:
            raise BadRequest("this label requires the CSR to be linked to the TLS session: put base64 of "
                             "tls-unique (TLS 1.2) or tls-exporter (TLS 1.3) in challengePassword")
        return
    binding = binding_of()  # only now: exporting it from the TLS session has a cost
    if binding is None:
        raise BadRequest("challengePassword cannot be checked: no channel binding for this TLS session "
                         "(TLS 1.3 tls-exporter unavailable on this server; use TLS 1.2)")
    kind, value = binding
    expected = base64.b64encode(value)
    if not hmac.compare_digest(password.strip(), expected):
        raise BadRequest(f"challengePassword does not match this TLS session's {kind} channel binding")
