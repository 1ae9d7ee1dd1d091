"""Trust anchors as a caller gives them (a PEM/DER file, bytes, or certificates) read into certificates."""

from __future__ import annotations

import os
from typing import Sequence, Union

from cryptography import x509

from kipuka.client.errors import EstError

TrustInput = Union[str, os.PathLike, bytes, Sequence[x509.Certificate], None]


def load_trust(trust: TrustInput) -> list[x509.Certificate] | None:
    if trust is None:
        return None
    if isinstance(trust, (str, os.PathLike)):
        try:
            with open(trust, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise EstError(f"cannot read trust anchors {os.fspath(trust)}: {exc.strerror}") from None
        certs = _certs_from_bytes(data, os.fspath(trust))
    elif isinstance(trust, bytes):
        certs = _certs_from_bytes(trust, "trust anchors")
    else:
        certs = list(trust)
    if not certs:
        raise EstError("the trust anchors contain no certificate")
    return certs


def _certs_from_bytes(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        if b"-----BEGIN PKCS7-----" in data:
            from cryptography.hazmat.primitives.serialization import pkcs7
            return pkcs7.load_pem_pkcs7_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise EstError(f"{what}: not PEM/DER certificates ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
