#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine; idempotent and quick when done.
#   - Rust (cargo, rustfmt, clippy): expected on the machine; Debian's packages as a fallback
#   - Python venv with mpmath + pytest for the reference oracle: target/pyenv
#   - make, g++, pkg-config, OpenSSL headers: rdkafka's bundled librdkafka build
#   - Java 17 + Maven for the Apache Kafka broker used by the Kafka tests (the broker's
#     jars come from Maven Central through scripts/kafka.sh, cached in ~/.cache)
#   - Debian's chromium + chromium-driver: the backtest report's browser test (headless)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if command -v apt-get >/dev/null; then
    if [ -z "${CHURNWATCH_APT_UPDATED:-}" ]; then
      apt-get update -qq >/dev/null
      export CHURNWATCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: cannot install $* (no apt-get); install it and retry" >&2
    exit 1
  fi
}

command -v cargo >/dev/null || apt_install cargo rustc
cargo fmt --version >/dev/null 2>&1 || apt_install rustfmt
cargo clippy --version >/dev/null 2>&1 || apt_install rust-clippy
# rdkafka builds its bundled librdkafka: needs make, a C/C++ compiler, OpenSSL headers.
command -v make >/dev/null || apt_install make
command -v g++ >/dev/null || apt_install g++
command -v pkg-config >/dev/null || apt_install pkg-config
pkg-config --exists openssl 2>/dev/null || apt_install libssl-dev
command -v python3 >/dev/null || apt_install python3 python3-venv
command -v java >/dev/null || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null || apt_install maven
{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } ||
  apt_install chromium chromium-driver

venv=target/pyenv
if ! "$venv/bin/python" -c 'import mpmath, pytest' 2>/dev/null; then
  mkdir -p target
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check mpmath pytest aiosmtpd
fi
# aiosmtpd: the real SMTP server of the notification tests.
"$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null ||
  "$venv/bin/pip" install --quiet --disable-pip-version-check aiosmtpd
scripts/kafka.sh install
echo "setup: ok ($(cargo --version), python venv $venv)"
