#!/usr/bin/env bash
# scripts/kafka.sh: a real single-node Apache Kafka 4.x broker (KRaft, combined
# broker+controller) on 127.0.0.1, for churnwatch's tests and development.
# Needs only java (17+) and mvn: Kafka's jars come from Maven Central.
#
# Usage:
#   scripts/kafka.sh install                 resolve the broker + tools classpath into
#                                            ${CHURNWATCH_CACHE:-~/.cache/churnwatch}/kafka-<ver>/libs
#   eval "$(scripts/kafka.sh start [--dir D])"
#                                            format + start a broker on free ports (installs
#                                            first if needed); prints KAFKA_BOOTSTRAP=127.0.0.1:P,
#                                            KAFKA_DIR=<data dir>, KAFKA_PID=<pid> (shell variables,
#                                            not exported; `set -a; eval ...; set +a` exports them)
#   eval "$(scripts/kafka.sh start --watch-pid PID)"
#                                            also stop the broker (and delete its temp dir)
#                                            once process PID is gone: test suites pass
#                                            their own pid, so no broker outlives them
#   scripts/kafka.sh stop [--dir D] [--keep] stop it and delete the dir unless --keep; without
#                                            --dir: $KAFKA_DIR if exported, else the one broker
#                                            that `start` (without --watch-pid) left running
#   scripts/kafka.sh restart-broker --dir D  stop and start the broker again, same ports + data
#   scripts/kafka.sh tool CLASS ARGS...      run a Kafka tool class on the cached classpath, e.g.
#       tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" --list
#       tool org.apache.kafka.tools.ProducerPerformance / ConsumerPerformance / ConsoleProducer ...
#   scripts/kafka.sh env                     print KAFKA_LIBS=<libs dir> and KAFKA_VERSION=<ver>
#
# Environment: KAFKA_VERSION (default 4.4.0), CHURNWATCH_CACHE, KAFKA_START_TIMEOUT (s, 60),
#   KAFKA_STOP_TIMEOUT (s, 30), KAFKA_SERVER_PROPS (extra server.properties lines, e.g.
#   "log.retention.ms=1000"; a later line wins), KAFKA_HEAP_OPTS (-Xms256m -Xmx512m),
#   KAFKA_TOOL_OPTS, KAFKA_STARTED_DIR (where `start` records brokers for `stop`).
# The broker keeps Kafka's production default group.initial.rebalance.delay.ms (3 s): a
# new consumer group waits that long for more members before its first assignment, so
# `churnwatch run`'s stream threads share the partitions from the start instead of one
# taking (and restoring) them all and handing half back.
# Broker log: <data dir>/logs/server.log (JVM stdout/stderr: <data dir>/kafka.out).
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka
CACHE=${CHURNWATCH_CACHE:-$HOME/.cache/churnwatch}/kafka-$KAFKA_VERSION
# Data dirs of brokers started without --watch-pid, one file each, for `stop` without --dir.
STARTED=${KAFKA_STARTED_DIR:-${CHURNWATCH_CACHE:-$HOME/.cache/churnwatch}/kafka-started}
LIBS=$CACHE/libs
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
TOOL_OPTS=${KAFKA_TOOL_OPTS:--Xmx512m}

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---- install -------------------------------------------------------------------
install() {
  command -v java >/dev/null || die "java not found (need Java 17+)"
  local stamp; stamp="$KAFKA_VERSION $(cksum <"$HERE/pom.xml")"
  [[ -f $CACHE/.complete && $(<"$CACHE/.complete") == "$stamp" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once, to fetch Kafka from Maven Central)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"; flock 9       # concurrent installs: one resolves, the others wait
  if [[ -f $CACHE/.complete && $(<"$CACHE/.complete") == "$stamp" ]]; then exec 9>&-; return 0; fi
  log "installing Kafka $KAFKA_VERSION from Maven Central into $LIBS ..."
  local tmp; tmp=$(mktemp -d "$CACHE/.libs.XXXXXX")
  if ! mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$CACHE/mvn.log" 2>&1; then
    tail -n 30 "$CACHE/mvn.log" >&2; rm -rf "$tmp"
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $CACHE/mvn.log)"
  fi
  local jar; for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar"; do
    [[ -f $tmp/$jar ]] || { rm -rf "$tmp"; die "resolution incomplete: $jar missing"; }
  done
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"
  echo "$stamp" >"$CACHE/.complete"; exec 9>&-
  local jars=("$LIBS"/*.jar); log "installed Kafka $KAFKA_VERSION (${#jars[@]} jars)"
}

# ---- helpers -------------------------------------------------------------------
# quick-starting JVM for the helper tools (storage format, readiness probe)
JAVA_TOOL=(java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
  -Dlog4j2.configurationFile="$HERE/log4j2-tools.properties" -cp "$LIBS/*")

free_port() {  # a random port in 16000-31999 (below Linux's ephemeral range) not bound now
  local p hex i
  for ((i = 0; i < 200; i++)); do
    p=$((16000 + RANDOM % 16000)); hex=$(printf ':%04X ' "$p")
    [[ " $* " == *" $p "* ]] && continue
    grep -qs "$hex" /proc/net/tcp /proc/net/tcp6 || { echo "$p"; return 0; }
  done
  die "no free TCP port found"
}

broker_pid() {  # pid of the broker of dir $1 if it is running (not a reused pid, not a zombie)
  local pid; [[ -f $1/kafka.pid ]] || return 1; pid=$(<"$1/kafka.pid")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $1/server.properties" &&
    echo "$pid"
}

write_config() {  # dir broker-port controller-port
  local dir=$1 p=$2 q=$3
  echo "$p $q" >"$dir/ports"  # broker port, controller port
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$q
listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$q
advertised.listeners=PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$q
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
log.segment.bytes=1048576
log.retention.ms=3600000
log.retention.bytes=104857600
log.retention.check.interval.ms=10000
${KAFKA_SERVER_PROPS:-}
EOF
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=10000\n' >"$dir/client.properties"
}

launch() {  # start the broker JVM of dir $1 in the background
  local dir=$1; mkdir -p "$dir/logs"
  # shellcheck disable=SC2086  # HEAP_OPTS is a list of JVM flags
  java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dkafka.logs.dir="$dir/logs" \
    -Dlog4j2.configurationFile="$HERE/log4j2-broker.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/kafka.out" 2>&1 &
  local pid=$! i; echo "$pid" >"$dir/kafka.pid"
  for ((i = 0; i < 100; i++)); do  # until the forked shell has exec'd java
    if broker_pid "$dir" >/dev/null || ! alive "$pid"; then return 0; fi
    sleep 0.05
  done
}

wait_ready() {  # dir: poll until the broker answers a metadata request; 1 if it died/timed out
  local dir=$1 port deadline=$((SECONDS + START_TIMEOUT))
  read -r port _ <"$dir/ports"
  while ((SECONDS < deadline)); do
    broker_pid "$dir" >/dev/null || { log "broker process exited during startup"; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
      timeout 30 "${JAVA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --list \
        --bootstrap-server "127.0.0.1:$port" --command-config "$dir/client.properties" \
        >/dev/null 2>>"$dir/probe.log"; then
      return 0
    fi
    sleep 0.3
  done
  log "broker not serving after ${START_TIMEOUT}s"; return 1
}

alive() {  # pid exists and is not a zombie (its cmdline empties before its sockets close)
  [[ -e /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) != Z* ]]
}

stop_java() {  # dir: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL
  local dir=$1 pid i
  if pid=$(broker_pid "$dir"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "broker $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
      ! alive "$pid" || die "could not kill broker $pid"
    fi
  fi
  rm -f "$dir/kafka.pid"
}

show_logs() {
  local f; for f in "$1/logs/server.log" "$1/kafka.out" "$1/format.log"; do
    [[ -s $f ]] && { echo "----- tail of $f" >&2; tail -n 40 "$f" >&2; }
  done; return 0
}

print_env() {
  local port; read -r port _ <"$1/ports"
  printf 'KAFKA_BOOTSTRAP=%q\nKAFKA_DIR=%q\nKAFKA_PID=%q\n' \
    "127.0.0.1:$port" "$1" "$(<"$1/kafka.pid")"
}

# ---- subcommands ---------------------------------------------------------------
start() {  # dir (empty: new temp dir)
  local dir=$1 made="" p q cid
  if [[ -z $dir ]]; then dir=$(mktemp -d "${TMPDIR:-/tmp}/churnwatch-kafka.XXXXXX"); made=1
  else
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty (use restart-broker for an existing broker)"
  fi
  # shellcheck disable=SC2064  # expand dir/made now
  trap "stop_java '$dir'; [[ -z '$made' ]] || rm -rf '$dir'; exit 130" INT TERM
  for _ in 1 2 3; do  # retry only if another process grabbed our random ports
    p=$(free_port); q=$(free_port "$p")
    write_config "$dir" "$p" "$q"
    rm -rf "$dir/data" "$dir/logs" "$dir/kafka.out"
    cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    cid=${cid/#-/A}   # argparse would read a leading '-' as an option
    "${JAVA_TOOL[@]}" kafka.tools.StorageTool format --standalone -t "$cid" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
      { show_logs "$dir"; [[ -n $made ]] && rm -rf "$dir"; die "formatting storage failed"; }
    launch "$dir"
    if wait_ready "$dir"; then
      trap - INT TERM
      if [[ -n $watch_pid ]]; then watchdog "$dir" "$watch_pid" "$made"
      else mkdir -p "$STARTED" && echo "$dir" >"$STARTED/$(<"$dir/kafka.pid")"; fi
      print_env "$dir"
      return 0
    fi
    stop_java "$dir"
    grep -qs 'Address already in use' "$dir/logs/server.log" "$dir/kafka.out" || break
    log "port clash on $p/$q, retrying with other ports"
  done
  show_logs "$dir"
  if [[ -n $made ]]; then rm -rf "$dir"; else log "data dir kept: $dir"; fi
  die "kafka broker failed to start"
}

watchdog() {  # dir pid made: once pid is gone, stop the broker and delete a temp dir
  (
    trap '' HUP INT
    while kill -0 "$2" 2>/dev/null; do sleep 1; done
    stop_java "$1"
    [[ -z $3 ]] || rm -rf "$1"
  ) </dev/null >/dev/null 2>&1 &
  disown
}

check_dir() {
  [[ -n $1 ]] || die "no data dir: pass --dir D or set KAFKA_DIR"
  [[ -f $1/server.properties && -f $1/ports ]] || die "$1 is not a kafka.sh data dir"
}

started_dirs() {  # data dirs of brokers `start` left running (forgets the others)
  local f d; [[ -d $STARTED ]] || return 0
  for f in "$STARTED"/*; do
    [[ -f $f ]] || continue; d=$(<"$f")
    if broker_pid "$d" >/dev/null; then echo "$d"; else rm -f "$f"; fi
  done
}

find_started() {  # the one running broker `start` left, else explain
  local dirs; mapfile -t dirs < <(started_dirs)
  case ${#dirs[@]} in
    1) echo "${dirs[0]}" ;;
    0) die "no broker started by '$0 start' is running (pass --dir D to stop another)" ;;
    *) die "several brokers are running; pass --dir with one of: ${dirs[*]}" ;;
  esac
}

stop() {  # dir keep
  local dir f; check_dir "$1"; dir=$(cd "$1" && pwd)
  stop_java "$dir"
  if [[ -d $STARTED ]]; then
    for f in "$STARTED"/*; do [[ -f $f && $(<"$f") == "$dir" ]] && rm -f "$f"; done
  fi
  if [[ -z $2 ]]; then rm -rf "$dir"; fi
  log "broker stopped${2:+ (data kept in $dir)}"
}

restart_broker() {  # dir
  local dir; check_dir "$1"; dir=$(cd "$1" && pwd)
  stop_java "$dir"
  launch "$dir"
  wait_ready "$dir" || { show_logs "$dir"; stop_java "$dir"; die "broker failed to restart"; }
  print_env "$dir"
}

cmd=${1:-help}; shift || true
dir="" keep="" watch_pid=""
if [[ $cmd != tool ]]; then
  while (($#)); do
    case $1 in
      --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir=$2; shift 2 ;;
      --dir=*) dir=${1#--dir=}; shift ;;
      --keep) keep=1; shift ;;
      --watch-pid) [[ $# -ge 2 ]] || die "--watch-pid needs a value"; watch_pid=$2; shift 2 ;;
      *) die "unknown argument: $1 (see: $0 help)" ;;
    esac
  done
fi
case $cmd in
  install) install; log "Kafka $KAFKA_VERSION ready in $LIBS" ;;
  env) install; printf 'KAFKA_LIBS=%q\nKAFKA_VERSION=%q\n' "$LIBS" "$KAFKA_VERSION" ;;
  start) install; start "$dir" ;;
  stop)
    dir=${dir:-${KAFKA_DIR:-}}
    [[ -n $dir ]] || dir=$(find_started)
    stop "$dir" "$keep" ;;
  restart-broker) restart_broker "$dir" ;;
  tool)
    [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
    install
    # shellcheck disable=SC2086  # TOOL_OPTS is a list of JVM flags
    exec java $TOOL_OPTS -Dlog4j2.configurationFile="$HERE/log4j2-tools.properties" \
      -cp "$LIBS/*" "$@" ;;
  help | -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
