"""Signing back ends behind one interface (see base.py); registry.py builds them from config."""

from kipuka.ca.base import CertificateAuthority, IssueRequest, Issued

__all__ = ["CertificateAuthority", "IssueRequest", "Issued"]
