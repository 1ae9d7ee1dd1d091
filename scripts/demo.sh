#!/usr/bin/env bash
# Set up kipuka on a fresh Debian machine and start a demo server on the embedded
# defaults: SQLite, and a local root + issuing CAs made on the spot in ./demo.
# Usage: scripts/demo.sh [DIR]   (default DIR: ./demo; listens on 0.0.0.0:9443)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-demo}"

if ! command -v curl >/dev/null || ! command -v openssl >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq curl openssl >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq curl openssl >/dev/null; fi
fi
if [ ! -x .venv/bin/kipuka ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e .
fi
if [ ! -f "$dir/kipuka.toml" ]; then
    .venv/bin/kipuka init "$dir" >/dev/null
fi
otp=$(.venv/bin/kipuka otp create -c "$dir/kipuka.toml" device-001 2>/dev/null)
token=$(.venv/bin/kipuka admin token create -c "$dir/kipuka.toml" "demo-officer-$(date +%s)" 2>/dev/null)

cat <<MSG

kipuka demo in $dir — EST on https://localhost:9443/.well-known/est/
A one-time password for entity device-001 (single use, 24 h): $otp

In another terminal, enroll a device (from the README walkthrough):

  curl -k -o cacerts.p7b https://localhost:9443/.well-known/est/cacerts
  base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out ca-chain.pem
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \\
      -keyout device.key -out device.csr -nodes -subj "/CN=device-001.example.com"
  openssl req -in device.csr -outform DER | base64 > device.csr.b64
  curl -X POST --cacert ca-chain.pem -u "device-001:$otp" \\
      -H "Content-Type: application/pkcs10" --data-binary @device.csr.b64 \\
      -o enrolled.p7b https://localhost:9443/.well-known/est/simpleenroll
  base64 -d enrolled.p7b | openssl pkcs7 -inform DER -print_certs -out device.crt

More OTPs: .venv/bin/kipuka otp create -c $dir/kipuka.toml ENTITY
Web console (approvals, certificates, OTPs, audit): https://127.0.0.1:9444/
  log in with this admin token (shown once): $token
  (the browser will warn about the demo's own CA: $dir/ca/root.pem)
Stop the server with Ctrl-C.

MSG
exec .venv/bin/kipuka serve -c "$dir/kipuka.toml"
