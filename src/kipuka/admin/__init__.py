"""The admin API (JSON) on its own listener: OTPs, pending requests, certificates, CAs, audit, health, metrics."""
