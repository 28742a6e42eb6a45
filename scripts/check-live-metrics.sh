#!/usr/bin/env bash
# The metrics of a running daemon, checked by real Prometheus tooling: starts a Kafka
# broker (scripts/kafka.sh) and `churnwatch run` on a small generated stream, then runs
# scripts/check-metrics.sh --prometheus on its /metrics (promtool check metrics on a live
# scrape; a real Prometheus server scrapes it and its HTTP API must return
# churnwatch_build_info; the alert rules must evaluate). Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CHURNWATCH_BIN:-target/debug/churnwatch}
[[ -x $bin ]] || cargo build --quiet
work=$(mktemp -d)
daemon=""
cleanup() {
  [[ -z $daemon ]] || { kill -TERM "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  [[ -z ${KAFKA_DIR:-} ]] || scripts/kafka.sh stop --dir "$KAFKA_DIR" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
eval "$(scripts/kafka.sh start --watch-pid $$)"
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
  --create --topic live-events --partitions 2 >/dev/null
"$bin" gen --accounts 40 --days 90 --seed 3 --output "$work/events.ndjson" 2>/dev/null
export CHURNWATCH_KAFKA__BROKERS=$KAFKA_BOOTSTRAP CHURNWATCH_KAFKA__INPUT_TOPIC=live-events \
  CHURNWATCH_KAFKA__GROUP_ID=live CHURNWATCH_KAFKA__INSTANCE_ID=live-1 \
  CHURNWATCH_SERVER__LISTEN=127.0.0.1:0 CHURNWATCH_KAFKA__IDLE_ADVANCE_AFTER=1s
"$bin" produce --input "$work/events.ndjson" 2>/dev/null
"$bin" run 2>"$work/daemon.log" &
daemon=$!
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/.*http server listening.*addr=\([0-9.:]*\).*/\1/p' "$work/daemon.log" | head -1)
  if [[ -n $addr ]] && curl -fsS "http://$addr/metrics" 2>/dev/null | grep -q '^churnwatch_alerts_total{'; then
    break
  fi
  kill -0 "$daemon" 2>/dev/null || { tail -20 "$work/daemon.log" >&2; echo "check-live-metrics: daemon died" >&2; exit 1; }
  sleep 0.2
done
[[ -n $addr ]] || { tail -20 "$work/daemon.log" >&2; echo "check-live-metrics: no address" >&2; exit 1; }
echo "check-live-metrics: daemon at $addr has published alerts; checking its metrics"
scripts/check-metrics.sh --prometheus "$addr"
