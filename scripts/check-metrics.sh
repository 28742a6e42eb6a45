#!/usr/bin/env bash
# Checks a running churnwatch's /metrics (the daemon is started by someone else).
#
#   scripts/check-metrics.sh [--prometheus] [--timeout S] ADDR
#       ADDR is host:port of server.listen, e.g. 127.0.0.1:9464.
#       Scrapes http://ADDR/metrics once: HTTP 200, the Prometheus text content type,
#       `promtool check metrics` (parse + lint), churnwatch_build_info present; lists
#       the metrics of src/metrics.rs that the scrape did not show (labelled metrics
#       appear once used).
#       --prometheus also starts a real Prometheus server (built from the Go module
#       proxy, cached) on a free loopback port with a 1 s scrape of ADDR and the
#       alerting rules of deploy/prometheus/rules.yml, waits (polling its HTTP API)
#       until the query churnwatch_build_info returns a series, prints it, checks the
#       target is up and every rule evaluates without error, and stops Prometheus.
#   scripts/check-metrics.sh --self-test [--prometheus]
#       Tests this script without Kafka: serves the exposition that
#       deploy/prometheus/sample-exposition.py builds from src/metrics.rs on a loopback
#       port (python http.server, same content type as the daemon) and checks it as
#       above; then serves a broken exposition and expects the check to fail.
#
# Tools come from deploy/tools/lib.sh (cache ${CHURNWATCH_CACHE:-~/.cache/churnwatch}).
# Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/tools/lib.sh
source deploy/tools/lib.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

PROMETHEUS=0 SELF_TEST=0 TIMEOUT=60 ADDR=""
while (($#)); do
  case $1 in
    --prometheus) PROMETHEUS=1 ;;
    --self-test) SELF_TEST=1 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) ADDR=$1 ;;
  esac
  shift
done

WORK=$(mktemp -d)
PIDS=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# http_get URL OUT: body to OUT; prints "STATUS CONTENT-TYPE" (no curl on fresh machines).
http_get() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
url, out = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=10) as r:
        body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
except urllib.error.HTTPError as e:
    body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
except OSError as e:
    print(f"000 unreachable:{e}")
    sys.exit(0)
open(out, "wb").write(body)
print(status, ctype.replace(" ", ""))
PY
}

# ---------------------------------------------------------------- scrape + promtool
check_scrape() {
  local addr=$1 file=$WORK/metrics.txt status ctype rc=0
  cw_go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" "$PROMETHEUS_TAGS"
  read -r status ctype < <(http_get "http://$addr/metrics" "$file")
  if [[ $status != 200 ]]; then
    echo "FAIL GET http://$addr/metrics: $status $ctype"
    return 1
  fi
  echo "ok   GET http://$addr/metrics: 200, $(wc -l <"$file") lines, Content-Type $ctype"
  if [[ $ctype != text/plain\;version=0.0.4* ]]; then
    echo "FAIL Content-Type is not the Prometheus text format (text/plain; version=0.0.4)"
    rc=1
  fi
  if "$CW_BIN/promtool" check metrics <"$file" >"$WORK/promtool.out" 2>&1; then
    echo "ok   promtool check metrics: no problems"
  else
    echo "FAIL promtool check metrics:"
    sed 's/^/       /' "$WORK/promtool.out"
    rc=1
  fi
  if grep -q '^churnwatch_build_info{' "$file"; then
    echo "ok   $(grep '^churnwatch_build_info{' "$file")"
  else
    echo "FAIL no churnwatch_build_info series"
    rc=1
  fi
  # Families shown vs registered (labelled families appear once a label set is used).
  python3 - "$file" src/metrics.rs <<'PY' || true
import re, sys
shown = set(re.findall(r"^# TYPE (\S+)", open(sys.argv[1]).read(), re.M))
src = open(sys.argv[2]).read()
reg = {"churnwatch_" + n for n in re.findall(
    r'(?:(?:IntCounterVec|IntGaugeVec|HistogramVec|IntCounter|IntGauge)::new|secs)\(\s*(?:(?:Histogram)?Opts::new\(\s*)?"([a-z0-9_]+)"', src)}
print(f"ok   {len(shown)} metric families exposed, {len(reg)} registered in src/metrics.rs")
unknown = sorted(shown - reg)
if unknown:
    print("note exposed but not in src/metrics.rs: " + ", ".join(unknown))
missing = sorted(reg - shown)
if missing:
    print("note not exposed yet (no label set used so far): " + ", ".join(missing))
PY
  return $rc
}

# ---------------------------------------------------------------- real Prometheus
# api_report WHAT FILE: reads a Prometheus HTTP API answer saved in FILE.
api_report() {
  python3 - "$1" "$2" <<'PY'
import json, sys
what, path = sys.argv[1], sys.argv[2]
data = json.load(open(path))["data"]
if what == "has-series":
    sys.exit(0 if data["result"] else 1)
if what == "series":
    for s in data["result"]:
        m = dict(s["metric"])
        name = m.pop("__name__", "")
        labels = ",".join('%s="%s"' % kv for kv in sorted(m.items()))
        print("       %s{%s} %s" % (name, labels, s["value"][1]))
elif what == "targets":
    t = data["activeTargets"]
    bad = [(x["scrapeUrl"], x["health"], x["lastError"]) for x in t if x["health"] != "up"]
    if bad or not t:
        print("FAIL targets not up: %s" % json.dumps(bad))
        sys.exit(1)
    print("ok   target up: " + ", ".join(x["scrapeUrl"] for x in t))
else:
    rules = [r for g in data["groups"] for r in g["rules"]]
    if what == "rules-evaluated":
        sys.exit(0 if rules and all(r["health"] != "unknown" for r in rules) else 1)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    if bad:
        print("FAIL rules with errors: %s" % json.dumps(bad))
        sys.exit(1)
    active = sorted({r["name"] for r in rules if r.get("state") in ("firing", "pending")})
    note = " (pending/firing now: %s)" % ", ".join(active) if active else ""
    print("ok   %d alerting rules of deploy/prometheus/rules.yml loaded and evaluated without error%s"
          % (len(rules), note))
PY
}

check_prometheus() {
  local addr=$1 port dir=$WORK/prometheus t0 deadline pid
  cw_go_install prometheus "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" "$PROMETHEUS_TAGS"
  port=$(cw_free_port)
  mkdir -p "$dir/data"
  cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: churnwatch
    static_configs:
      - targets: ["$addr"]
EOF
  "$CW_BIN/prometheus" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  t0=$SECONDS deadline=$((SECONDS + TIMEOUT))
  local api="http://127.0.0.1:$port"
  # Ready: /-/ready answers 200.
  until [[ $(http_get "$api/-/ready" "$dir/ready" | cut -d' ' -f1) == 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "FAIL prometheus exited:"; tail -n 20 "$dir/prometheus.log"; return 1
    fi
    ((SECONDS < deadline)) || { echo "FAIL prometheus not ready after ${TIMEOUT} s"; tail -n 20 "$dir/prometheus.log"; return 1; }
    sleep 0.2
  done
  echo "ok   prometheus $PROMETHEUS_VERSION ready on 127.0.0.1:$port after $((SECONDS - t0)) s (scraping $addr every 1 s)"
  # A series: the query returns a non-empty vector.
  until http_get "$api/api/v1/query?query=churnwatch_build_info" "$dir/query.json" >/dev/null &&
        api_report has-series "$dir/query.json" 2>/dev/null; do
    ((SECONDS < deadline)) || {
      echo "FAIL no churnwatch_build_info series after ${TIMEOUT} s; targets:"
      http_get "$api/api/v1/targets" "$dir/targets.json" >/dev/null; cat "$dir/targets.json"; echo
      return 1
    }
    sleep 0.2
  done
  echo "ok   query churnwatch_build_info after $((SECONDS - t0)) s:"
  api_report series "$dir/query.json"
  # Target health, then every rule evaluated once and without error.
  http_get "$api/api/v1/targets" "$dir/targets.json" >/dev/null
  api_report targets "$dir/targets.json" || return 1
  until http_get "$api/api/v1/rules" "$dir/rules.json" >/dev/null && api_report rules-evaluated "$dir/rules.json"; do
    ((SECONDS < deadline)) || { echo "FAIL rules not evaluated after ${TIMEOUT} s"; return 1; }
    sleep 0.2
  done
  api_report rules "$dir/rules.json" || return 1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "ok   prometheus stopped"
}

# ---------------------------------------------------------------- self-test server
# serve FILE: serves FILE at /metrics on a free loopback port; sets SERVED_ADDR.
serve() {
  local file=$1 portfile=$WORK/port.$RANDOM
  python3 - "$file" "$portfile" <<'PY' &
import http.server, os, sys
body = open(sys.argv[1], "rb").read()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tmp = sys.argv[2] + ".tmp"
open(tmp, "w").write(str(server.server_address[1]))
os.rename(tmp, sys.argv[2])
server.serve_forever()
PY
  PIDS+=("$!")
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -f $portfile ]] && break
    sleep 0.05
  done
  [[ -f $portfile ]] || cw_die "test server did not start"
  SERVED_ADDR=127.0.0.1:$(<"$portfile")
}

if ((SELF_TEST)); then
  [[ -z $ADDR ]] || cw_die "--self-test takes no ADDR"
  python3 deploy/prometheus/sample-exposition.py >"$WORK/sample.txt"
  serve "$WORK/sample.txt"
  echo "== self-test: sample exposition of src/metrics.rs ($(grep -c '^# TYPE' "$WORK/sample.txt") families) at $SERVED_ADDR"
  rc=0
  check_scrape "$SERVED_ADDR" || rc=1
  if ((PROMETHEUS)); then check_prometheus "$SERVED_ADDR" || rc=1; fi
  echo "== self-test: a broken exposition must fail"
  {
    cat "$WORK/sample.txt"
    printf '# HELP churnwatch_bad_counter a counter without _total\n# TYPE churnwatch_bad_counter counter\nchurnwatch_bad_counter 1\n'
  } >"$WORK/bad.txt"
  serve "$WORK/bad.txt"
  if check_scrape "$SERVED_ADDR" >"$WORK/bad.out" 2>&1; then
    cat "$WORK/bad.out"; echo "FAIL the broken exposition passed"; rc=1
  else
    echo "ok   rejected: $(grep -m1 -A1 'promtool check metrics' "$WORK/bad.out" | tail -n1 | sed 's/^ *//')"
  fi
  if ((rc == 0)); then echo "check-metrics: self-test passed"; else echo "check-metrics: self-test FAILED"; fi
  exit $rc
fi

[[ -n $ADDR ]] || { usage >&2; exit 2; }
rc=0
echo "== http://$ADDR/metrics"
check_scrape "$ADDR" || rc=1
if ((PROMETHEUS)); then
  echo "== real Prometheus scraping $ADDR"
  check_prometheus "$ADDR" || rc=1
fi
if ((rc == 0)); then echo "check-metrics: $ADDR passed"; else echo "check-metrics: $ADDR FAILED"; fi
exit $rc
