"""How a CMS SignerInfo names its signer's certificate (RFC 5652 §5.3), and the Names it compares."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from kipuka.cmc import der, oids


def name_from_der(name_der: bytes) -> x509.Name | None:
    """An x509.Name from a DER Name, via cryptography's own parser (no signature is checked).

    cryptography has no loader for a bare Name, so the Name is placed as the
    subject of a throwaway CSR structure and read back. None if it does not parse.
    """
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200"
                         "04" + "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                         "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
    cri = der.seq(der.integer(0), name_der, spki, b"\xa0\x00")
    csr = der.seq(cri, der.algorithm(oids.ECDSA_SHA256), der.bit_string(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    try:
        return x509.load_der_x509_csr(csr).subject
    except Exception:  # noqa: BLE001 - any parse failure means "not a Name we can show"
        return None


def name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


@dataclass(frozen=True)
class SignerId:
    """SignerIdentifier (RFC 5652 §5.3): issuerAndSerialNumber or subjectKeyIdentifier."""

    issuer_der: bytes | None = None
    serial_number: int | None = None
    subject_key_identifier: bytes | None = None

    @property
    def kind(self) -> str:
        return "subjectKeyIdentifier" if self.subject_key_identifier is not None else "issuerAndSerialNumber"

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der) if self.issuer_der is not None else None

    def matches(self, cert: x509.Certificate) -> bool:
        if self.subject_key_identifier is not None:
            ski = cert_ski(cert)
            if ski is None:  # no extension: the RFC 5280 §4.2.1.2 method (1) value, as OpenSSL computes it
                try:
                    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]
                except (ValueError, UnsupportedAlgorithm, TypeError):
                    return False
            return ski == self.subject_key_identifier
        return cert.serial_number == self.serial_number and name_der(cert.issuer) == self.issuer_der


def cert_ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None
