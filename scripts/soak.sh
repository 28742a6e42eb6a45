#!/usr/bin/env bash
# scripts/soak.sh: the soak with chaos (tests/soak): two `churnwatch run` instances and
# `churnwatch notify` against a real broker (scripts/kafka.sh) under a steady generated
# load, with seeded faults: SIGKILL + restart, broker restart, SIGSTOP past the session
# timeout + SIGCONT, webhook 5xx bursts. Checks that the alerts topic equals `replay`
# of the input, that every alert's latest state was delivered once per idempotency
# key, and that resident memory did not grow; prints the figures; exits non-zero on
# any failure.
#
# Usage:
#   scripts/soak.sh           the short form (CI): 150 s of load, seed 17, one fault of
#                             each kind (about 3.5 min with the checks)
#   scripts/soak.sh --long    20 min of load (SOAK_SECS=1200), a fault every ~28 s
#
# Environment: SOAK_SECS (length of the load, s), SOAK_SEED (the fault schedule and the
#   generated input), SOAK_RATE (events/s, 250), SOAK_KEEP=1 (keep the processes' logs
#   and print where). The test is built with the dev profile, as by `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  --long) export SOAK_SECS=${SOAK_SECS:-1200} ;;
  "") export SOAK_SECS=${SOAK_SECS:-150} ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
export SOAK_SEED=${SOAK_SEED:-17}
exec cargo test --quiet --test soak -- --ignored --exact soak --nocapture
