"""The test's other parties' certificates: a manufacturer CA that issues IDevIDs (with the
serialNumber subject attribute and the MASA URL extension, RFC 8995 §2.3), the MASA's
TLS and voucher-signing certificates, and a registrar certificate for kipuka."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kipuka.brski.idevid import masa_url_extension
from tests.helpers import write_identity

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem_file(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def _name(cn: str, serial: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, *, days: float = 365) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(cn: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name(cn), _name(cn), key.public_key(), days=3650)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issuer(cert, key)


def issue(ca: Issuer, cn: str, *, serial: str | None = None, masa_url: str | None = None, ekus=(),
          sans: list[x509.GeneralName] | None = None, days: float = 365) -> Issuer:
    """An end-entity certificate (an IDevID when `serial` and `masa_url` are given) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(_name(cn, serial), ca.cert.subject, key.public_key(), days=days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                              critical=False))
    if masa_url is not None:
        builder = builder.add_extension(masa_url_extension(masa_url), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issuer(builder.sign(ca.key, hashes.SHA256()), key)


def idevid(ca: Issuer, serial: str, masa_url: str) -> Issuer:
    return issue(ca, f"pledge {serial}", serial=serial, masa_url=masa_url,
                 ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])


def registrar_identity(deployment: Path) -> tuple[Path, Path]:
    """A registrar certificate from the deployment's default CA: clientAuth for TLS to the MASA,
    id-kp-cmcRA as RFC 8995 §5.5 asks of a registrar that signs voucher requests."""
    ca_cert = x509.load_pem_x509_certificate((deployment / "ca" / "default.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((deployment / "private" / "default.key").read_bytes(), None)
    reg = issue(Issuer(ca_cert, ca_key), "kipuka registrar", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH, CMC_RA])
    crt, key = write_identity(deployment / "private", "registrar", reg.key, reg.cert)
    # The registrar file carries its issuing CA for the TLS client chain.
    Path(crt).write_bytes(reg.cert.public_bytes(serialization.Encoding.PEM)
                          + ca_cert.public_bytes(serialization.Encoding.PEM))
    return Path(crt), Path(key)
