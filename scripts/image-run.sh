#!/usr/bin/env bash
# scripts/image-run.sh: builds the runtime stage of deploy/Dockerfile with podman from a
# Debian base made here (mmdebstrap, no registry), runs it, and prints what it checked:
#   - the image's user, and the uid the daemon really runs as (not root);
#   - `churnwatch demo` works in the container;
#   - `churnwatch run` against a real broker (scripts/kafka.sh, loopback, --network host)
#     with the config mounted read-only over /etc/churnwatch/churnwatch.toml: the HTTP
#     port exists only in that file, so /healthz and /readyz answering there
#     and check-config showing its rule setting prove the mount was read;
#   - root filesystem read-only, all capabilities dropped, no-new-privileges, and
#     nofile/nproc ulimits of 1024, as the Kubernetes manifests run it.
#
# Usage: scripts/image-run.sh [--binary PATH] [--rebuild-base]
#   --binary PATH    the churnwatch binary to put in the image (default:
#                    target/release/churnwatch, built with `cargo build --release` if missing)
#   --rebuild-base   make the Debian base again (otherwise kept in target/image/base.tar)
# Needs root, podman, runc and mmdebstrap (Debian: apt-get install -y podman runc
# mmdebstrap), java 17+ for the broker. Exit 1 if a check fails. Not part of .ci/run:
# the first run makes the base (a minute or more); later runs take about one minute.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/churnwatch REBUILD_BASE=""
while (($#)); do
  case $1 in
    --binary) BIN=$2; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

WORK=target/image
BASE_IMAGE=localhost/churnwatch-base:bookworm
IMAGE=localhost/churnwatch:image-run
PODMAN=(podman --cgroup-manager=cgroupfs --runtime runc)
FAILED=0
ok() { echo "  ok    $*"; }
bad() { echo "  FAIL  $*"; FAILED=1; }
log() { echo "image-run: $*" >&2; }
# verdict GOOD BAD CMD...: prints ok GOOD if CMD succeeds, else FAIL BAD.
verdict() { local good=$1 fail=$2; shift 2; if "$@"; then ok "$good"; else bad "$fail"; fi; }

[[ $(id -u) == 0 ]] || { log "must run as root (podman without a user namespace set-up)"; exit 1; }
for tool in podman runc mmdebstrap java; do
  command -v "$tool" >/dev/null || { log "$tool not found (apt-get install -y podman runc mmdebstrap)"; exit 1; }
done
mkdir -p "$WORK"
if [[ ! -x $BIN ]]; then
  log "building the release binary"; cargo build --release --locked --bin churnwatch
fi

# ---- base: Debian bookworm minbase with what the runtime stage installs ------------
if [[ -n $REBUILD_BASE || ! -s $WORK/base.tar ]]; then
  log "making the base with mmdebstrap (bookworm, minbase)"
  mmdebstrap --variant=minbase --include=libssl3,zlib1g,ca-certificates bookworm \
    "$WORK/base.tar.tmp" >"$WORK/mmdebstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/mmdebstrap.log" >&2; log "mmdebstrap failed"; exit 1; }
  mv "$WORK/base.tar.tmp" "$WORK/base.tar"
  "${PODMAN[@]}" rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true
fi
if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  "${PODMAN[@]}" import "$WORK/base.tar" "$BASE_IMAGE" >/dev/null
fi

# ---- runtime stage: deploy/Dockerfile's own, FROM the local base, COPY of the binary --
CTX=$(mktemp -d "$WORK/ctx.XXXXXX")
BROKER_DIR=""
CONTAINER=cw-image-run-$$
cleanup() {
  "${PODMAN[@]}" rm -f "$CONTAINER" >/dev/null 2>&1 || true
  [[ -z $BROKER_DIR ]] || scripts/kafka.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
  rm -rf "$CTX"
}
trap cleanup EXIT
install -D -m 0755 "$BIN" "$CTX/out/churnwatch"
install -D -m 0644 config/churnwatch.toml "$CTX/config/churnwatch.toml"
# The runtime stage from its FROM to the end; only the base and the binary's source change.
sed -n '/^# ---- runtime/,$p' deploy/Dockerfile |
  sed -e "s|^FROM debian:\${DEBIAN_RELEASE}-slim|FROM $BASE_IMAGE|" \
      -e 's|^COPY --from=build /out/churnwatch|COPY out/churnwatch|' >"$CTX/Containerfile"
if ! grep -q "^FROM $BASE_IMAGE" "$CTX/Containerfile" || ! grep -q '^COPY out/churnwatch' "$CTX/Containerfile"; then
  log "deploy/Dockerfile's runtime stage changed shape: update this script"; exit 1
fi
log "building $IMAGE (runtime stage of deploy/Dockerfile)"
"${PODMAN[@]}" build --network host --pull=never -f "$CTX/Containerfile" -t "$IMAGE" "$CTX" \
  >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; log "podman build failed"; exit 1; }

LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --read-only --cap-drop=ALL
  --security-opt no-new-privileges)
RUN=("${PODMAN[@]}" run --rm "${LIMITS[@]}")
echo "image-run: $IMAGE ($(du -h "$BIN" | cut -f1) binary, $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec) image)"

# ---- user ---------------------------------------------------------------------------
user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$IMAGE")
verdict "image user $user" "image user is '$user', want 10001:10001" test "$user" = 10001:10001
ids=$("${RUN[@]}" --entrypoint /usr/bin/id "$IMAGE")
verdict "in the container: $ids" "in the container: $ids" \
  test "$ids" = "uid=10001(churnwatch) gid=10001(churnwatch) groups=10001(churnwatch)"

# ---- demo ---------------------------------------------------------------------------
if out=$("${RUN[@]}" "$IMAGE" demo 2>&1) && grep -q "firing" <<<"$out"; then
  ok "demo: exit 0, $(wc -l <<<"$out") lines of report"
else
  bad "demo failed:"; tail -n 20 <<<"$out"
fi

# ---- run: probes, config mount ------------------------------------------------------
eval "$(scripts/kafka.sh start)"
BROKER_DIR=$KAFKA_DIR
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
  --create --topic image-run-events --partitions 2 >/dev/null
port=$((20000 + RANDOM % 10000))
group=image-run-$RANDOM
cat >"$CTX/churnwatch.toml" <<EOF
[kafka]
brokers = "$KAFKA_BOOTSTRAP"
group_id = "$group"
instance_id = "image-run"
input_topic = "image-run-events"
alerts_topic = "image-run-alerts"
dead_letter_topic = "image-run-dlq"
[server]
listen = "127.0.0.1:$port"
[rules.inactive]
after_days = 21
EOF
chmod 0644 "$CTX/churnwatch.toml"
MOUNT=(-v "$PWD/$CTX/churnwatch.toml:/etc/churnwatch/churnwatch.toml:ro,Z")
if out=$("${RUN[@]}" --network host "${MOUNT[@]}" "$IMAGE" check-config 2>&1) &&
  grep -q "inactive after 21 days" <<<"$out"; then
  ok "config mount read: check-config says 'inactive after 21 days' (default 14)"
else
  bad "check-config did not show the mounted config:"; tail -n 20 <<<"$out"
fi
"${PODMAN[@]}" run -d --name "$CONTAINER" "${LIMITS[@]}" --network host "${MOUNT[@]}" "$IMAGE" run \
  >/dev/null
probe() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$1" || true; }
ready="" started=$SECONDS
while ((SECONDS - started < 60)); do
  [[ $(probe /readyz) == 200 ]] && { ready=1; break; }
  [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null) == true ]] || break
  sleep 0.5
done
if [[ -n $ready ]]; then
  ok "run: /readyz 200 after $((SECONDS - started)) s on port $port (only in the mounted config)"
else
  bad "run: /readyz not 200 within 60 s; log:"; "${PODMAN[@]}" logs "$CONTAINER" 2>&1 | tail -n 20
fi
code=$(probe /healthz)
verdict "run: /healthz 200" "run: /healthz answered '$code'" test "$code" = 200
pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$CONTAINER" 2>/dev/null || echo 0)
if [[ $pid != 0 && -r /proc/$pid/status ]]; then
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
  caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
  nofile=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")
  verdict "run: the daemon's uid is $uid" "run: the daemon's uid is $uid" test "$uid" = 10001
  verdict "run: no effective capabilities" "run: CapEff $caps" test "$caps" = 0000000000000000
  verdict "run: nofile limit $nofile" "run: nofile limit $nofile" test "$nofile" = 1024
else
  bad "run: no process to inspect"
fi
started=$SECONDS
"${PODMAN[@]}" stop -t 30 "$CONTAINER" >/dev/null
status=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$CONTAINER")
verdict "run: SIGTERM -> exit 0 after $((SECONDS - started)) s" "run: exit $status after SIGTERM" \
  test "$status" = 0
if ((FAILED)); then echo "image-run: FAILED"; exit 1; fi
echo "image-run: all checks passed"
