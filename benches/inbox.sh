#!/usr/bin/env bash
# Inbox benchmark: a view of ACCOUNTS accounts built in-process, served on loopback and
# driven by oha (installed from crates.io into the cache on first use) at CONCURRENCY
# clients for DURATION per endpoint. Prints memory per account, p50/p99 and req/s.
# Figures go in docs/performance.md ("Inbox").
#
#   benches/inbox.sh                    # 1,000,000 accounts, 64 clients, 10 s each
#   benches/inbox.sh --quick            # 20,000 accounts, 2 s each (for CI)
#   ACCOUNTS=200000 DURATION=5s benches/inbox.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--quick" ]; then
  export ACCOUNTS=${ACCOUNTS:-20000} DURATION=${DURATION:-2s}
fi
export ACCOUNTS=${ACCOUNTS:-1000000} DURATION=${DURATION:-10s} CONCURRENCY=${CONCURRENCY:-64}
cache=${CHURNWATCH_CACHE:-$HOME/.cache/churnwatch}
OHA_VERSION=1.16.0
if [ ! -x "$cache/oha/bin/oha" ] || ! "$cache/oha/bin/oha" --version | grep -q "$OHA_VERSION"; then
  echo "installing oha $OHA_VERSION into $cache/oha (once)" >&2
  cargo install oha --version "$OHA_VERSION" --locked --root "$cache/oha" --quiet
fi
export OHA="$cache/oha/bin/oha"
exec cargo bench --quiet --bench inbox
