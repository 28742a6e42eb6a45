#!/usr/bin/env bash
# The whole test suite. Installs what it needs (scripts/setup.sh), then:
# formatting, lints, unit + integration tests, the short soak with chaos (scripts/soak.sh),
# the README's commands (scripts/check-readme.sh),
# and the reference oracle's own tests.
# Tests that need servers start them themselves and stop them when done.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CHURNWATCH_PYTHON="$PWD/target/pyenv/bin/python"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets --quiet
echo "== soak with chaos, short form (scripts/soak.sh: ~3 min, seed 17, one fault of each kind)"
scripts/soak.sh
echo "== README: fences, shell blocks, churnwatch options; Try it and the Kafka quick start run"
scripts/check-readme.sh --kafka
echo "== reference oracle tests"
"$CHURNWATCH_PYTHON" -m pytest tests/reference -q -p no:cacheprovider
echo "== deployment kit: hadolint, kubeconform, helm lint, promtool rules and tests, dashboard, compose"
scripts/check-deploy.sh
echo "== live metrics: promtool check metrics and a real Prometheus scraping a running daemon"
scripts/check-live-metrics.sh
