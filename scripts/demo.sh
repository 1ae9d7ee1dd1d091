#!/usr/bin/env bash
# Set up kipuka on a fresh Debian machine and start a demo server on the embedded
# defaults: SQLite, and a local root + issuing CAs made on the spot in ./demo.
# Usage: scripts/demo.sh [--est-port N] [--admin-port N] [--revocation-port N] [DIR]
#   DIR defaults to ./demo. Ports default to $EST_PORT, $ADMIN_PORT and $REVOCATION_PORT, else
#   9443 (EST, 0.0.0.0), 9444 (admin API and console, 127.0.0.1) and 9080 (CRLs/OCSP, 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
est_port="${EST_PORT:-9443}" admin_port="${ADMIN_PORT:-9444}" revocation_port="${REVOCATION_PORT:-9080}"
dir=demo
while [ $# -gt 0 ]; do
    case "$1" in
        --est-port) est_port="$2"; shift 2 ;;
        --admin-port) admin_port="$2"; shift 2 ;;
        --revocation-port) revocation_port="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        -*) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) dir="$1"; shift ;;
    esac
done
for port in "$est_port" "$admin_port" "$revocation_port"; do
    case "$port" in ''|*[!0-9]*) echo "demo.sh: port '$port' is not a number" >&2; exit 2 ;; esac
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "demo.sh: port $port is already in use; choose others with --est-port, --admin-port" \
             "and --revocation-port (or EST_PORT, ADMIN_PORT, REVOCATION_PORT)" >&2
        exit 1
    fi
done

need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
# A minimal Debian's python3 lacks venv's pip bootstrap (ensurepip): python3-venv brings it.
[ -x .venv/bin/kipuka ] || python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x .venv/bin/kipuka ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e .
fi
if [ ! -f "$dir/kipuka.toml" ]; then
    .venv/bin/kipuka init "$dir" --listen "0.0.0.0:$est_port" --admin-listen "127.0.0.1:$admin_port" \
        --revocation-listen "0.0.0.0:$revocation_port" >/dev/null
fi
otp=$(.venv/bin/kipuka otp create -c "$dir/kipuka.toml" device-001 2>/dev/null)
token=$(.venv/bin/kipuka admin token create -c "$dir/kipuka.toml" "demo-officer-$(date +%s)" 2>/dev/null)

cat <<MSG

kipuka demo in $dir — EST on https://localhost:$est_port/.well-known/est/
A one-time password for entity device-001 (single use, 24 h): $otp

In another terminal, enroll a device (from the README walkthrough):

  OTP=$otp
  curl -k -o cacerts.p7b https://localhost:$est_port/.well-known/est/cacerts
  base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out ca-chain.pem
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \\
      -keyout device.key -out device.csr -nodes -subj "/CN=device-001.example.com"
  openssl req -in device.csr -outform DER | base64 > device.csr.b64
  curl -X POST --cacert ca-chain.pem -u "device-001:\$OTP" \\
      -H "Content-Type: application/pkcs10" --data-binary @device.csr.b64 \\
      -o enrolled.p7b https://localhost:$est_port/.well-known/est/simpleenroll
  base64 -d enrolled.p7b | openssl pkcs7 -inform DER -print_certs -out device.crt

More OTPs: .venv/bin/kipuka otp create -c $dir/kipuka.toml ENTITY
Web console (approvals, certificates, OTPs, audit): https://127.0.0.1:$admin_port/
  log in with this admin token (shown once): $token
  (the browser will warn about the demo's own CA: $dir/ca/root.pem)
Stop the server with Ctrl-C.

MSG
# The ports given here win over those an existing $dir/kipuka.toml was made with.
exec .venv/bin/kipuka serve -c "$dir/kipuka.toml" --listen "0.0.0.0:$est_port" \
    --admin-listen "127.0.0.1:$admin_port" --revocation-listen "0.0.0.0:$revocation_port"
