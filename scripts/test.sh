#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it:
# the whole suite on SQLite, then the EST and admin suites again on PostgreSQL.
# Usage: scripts/test.sh                 (both passes)
#        scripts/test.sh [pytest args]   (one pass on SQLite with these arguments)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: the real clients and servers the tests drive.
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)   # a minimal Debian lacks it
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/bcpkix.jar ] || need+=(libbcpkix-java)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)   # PKCS#11 CA tests (tests/test_hsm*.py)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)           # web console tests (tests/console)
command -v certmonger >/dev/null 2>&1 || need+=(certmonger)   # drives kipuka-est certmonger-submit (tests/client)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verifies packaging/ units (tests/client/test_packaging.py)
command -v testssl >/dev/null 2>&1 || command -v testssl.sh >/dev/null 2>&1 || need+=(testssl.sh)  # TLS matrix
if [ ${#need[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: this machine kind runs it at 127.0.0.1:5432 (trust auth, database "test").
pg_url="${KIPUKA_PG_URL:-postgresql://127.0.0.1:5432/test}"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! psql "$pg_url" -qAtc "select 1" >/dev/null 2>&1; then
    as_root runuser -u postgres -- psql -qc "CREATE ROLE $(id -un) SUPERUSER LOGIN" 2>/dev/null || true
    as_root runuser -u postgres -- createdb -O "$(id -un)" test 2>/dev/null || true
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,postgres,hsm]'

if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest -q "$@"
fi

# Test files run in parallel, one file per worker process (most of a test's time is spent
# waiting on the kipuka servers it starts, so one worker more than cores keeps them busy: on this
# 2-core machine kind 3 workers take the suite from about 12 to about 9.5 minutes).
# KIPUKA_TEST_WORKERS=0 runs them one by one.
parallel=(-n "${KIPUKA_TEST_WORKERS:-$(( $(nproc) + 1 ))}" --dist loadfile)

echo "== pass 1: the whole suite on SQLite"
.venv/bin/python -m pytest -q "${parallel[@]}"

echo "== pass 2: what the store does differently on PostgreSQL ($pg_url)"
# The files whose tests write or read through the store (enrollment, OTPs, approvals, CRLs, the audit
# chain, escrow, CMC replay, BRSKI, the console's lists, migrations, crash and concurrency); the
# parsers, TLS and protocol suites do not touch the database and run once, in pass 1.
KIPUKA_TEST_DATABASE="$pg_url" .venv/bin/python -m pytest -q "${parallel[@]}" \
    tests/test_smoke.py tests/test_otp.py tests/test_mtls.py tests/test_hostile_device.py tests/test_approval.py \
    tests/test_admin_api.py tests/test_revocation.py tests/test_audit_chain.py tests/test_concurrency.py \
    tests/test_crash_recovery.py tests/test_migrations.py tests/console tests/unit/test_issuance_sql.py tests/unit/test_audit_chainer.py \
    tests/test_brski.py tests/test_fullcmc.py tests/test_serverkeygen.py
