"""Interop suite: kipuka driven by independent clients (Bouncy Castle, curl + openssl, testssl.sh)."""
