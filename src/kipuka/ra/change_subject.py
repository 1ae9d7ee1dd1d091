"""The ChangeSubjectName CSR attribute (RFC 6402 2.8), read with a real ASN.1 parser.

cryptography does not decode structured CSR attributes, so the CSR is parsed a
second time with pyasn1 — only when a re-enrollment asks for a name change.
RFC 6402's ASN.1 gives `subject` and `subjectAlt` the same tag (erratum 3943
adds [1] to subjectAlt); both forms are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2986, rfc5280

from kipuka.errors import BadRequest

ID_CMC_CHANGE_SUBJECT_NAME = univ.ObjectIdentifier("1.3.6.1.5.5.7.7.36")


@dataclass(frozen=True)
class ChangeSubjectName:
    subject_der: bytes | None
    subject_alt_der: bytes | None

    def names_certificate(self, cert: x509.Certificate) -> bool:
        """True when the attribute names `cert`'s current subject (the name being changed)."""
        if self.subject_der is None:
            return False
        return self.subject_der == cert.subject.public_bytes()


def change_subject_name(csr_der: bytes) -> ChangeSubjectName | None:
    try:
        req, _ = decoder.decode(csr_der, asn1Spec=rfc2986.CertificationRequest())
        for attr in req["certificationRequestInfo"]["attributes"]:
            if attr["type"] != ID_CMC_CHANGE_SUBJECT_NAME:
                continue
            for value in attr["values"]:
                seq, _ = decoder.decode(bytes(value))
                parts = [encoder.encode(seq[i]) for i in range(len(seq))]
                subject = None
                for part in parts:
                    try:
                        decoder.decode(part, asn1Spec=rfc5280.Name())
                        subject = subject or part
                    except PyAsn1Error:
                        continue
                return ChangeSubjectName(subject, None)
    except (PyAsn1Error, TypeError, ValueError) as exc:
        raise BadRequest(f"CSR attributes are malformed: {str(exc).splitlines()[0][:120]}") from None
    return None
