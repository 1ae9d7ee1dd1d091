"""The relying-party listener (plain HTTP): CRLs and OCSP, reachable by anyone who checks certificates."""
