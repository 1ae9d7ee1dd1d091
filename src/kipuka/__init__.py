"""kipuka: an EST (RFC 7030, RFC 8951) enrollment server."""

__version__ = "0.1.0"
