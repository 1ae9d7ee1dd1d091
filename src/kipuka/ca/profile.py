"""The end-entity certificate profile that every software-signing back end applies.

Extensions come only from the RA's template, never from the CSR: the CA flag is
always false, so no CSR can ask its way into a CA certificate.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID

from kipuka.ca import spliced
from kipuka.ca.base import IssueRequest
from kipuka.ca.signing import signing_hash

CLOCK_SKEW = dt.timedelta(minutes=5)


def key_usage_for(public_key: object) -> x509.KeyUsage:
    """digitalSignature for every key; RSA keys may also transport keys (TLS 1.2 RSA kex, S/MIME)."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def build_certificate(
    req: IssueRequest,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    serial: int,
    now: dt.datetime,
) -> x509.Certificate:
    """The end-entity certificate for `req`, spliced from the label's pre-encoded template
    (ca/spliced.py); the template itself comes from reference_certificate()."""
    is_rsa = isinstance(req.public_key, rsa.RSAPublicKey)
    return spliced.assemble(
        lambda: reference_certificate(req, issuer, issuer_key, serial, now, san=False),
        (issuer, req.ekus, req.crl_urls, req.ocsp_urls, is_rsa),
        issuer_key=issuer_key, serial=serial,
        not_before=max(now - CLOCK_SKEW, issuer.not_valid_before_utc),
        not_after=min(now + req.validity, issuer.not_valid_after_utc),
        subject=req.subject, public_key=req.public_key, san=req.san)


def reference_certificate(
    req: IssueRequest,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    serial: int,
    now: dt.datetime,
    *,
    san: bool = True,
) -> x509.Certificate:
    """The profile spelled out with cryptography's CertificateBuilder: what build_certificate's
    spliced output must equal, byte for byte, and where its template bytes come from."""
    not_after = min(now + req.validity, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(req.subject)
        .issuer_name(issuer.subject)
        .public_key(req.public_key)
        .serial_number(serial)
        .not_valid_before(max(now - CLOCK_SKEW, issuer.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_for(req.public_key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(req.public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    if req.ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(req.ekus)), critical=False)
    if req.crl_urls:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(u) for u in req.crl_urls], None, None, None)]), critical=False)
    if req.ocsp_urls:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
            for u in req.ocsp_urls]), critical=False)
    if san and req.san is not None:
        # RFC 5280 4.2.1.6: SAN is critical when the subject is empty.
        builder = builder.add_extension(req.san, critical=len(req.subject) == 0)
    return builder.sign(issuer_key, signing_hash(issuer_key))


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]

