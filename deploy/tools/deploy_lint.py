#!/usr/bin/env python3
"""Consistency checks of the deployment kit that no off-the-shelf tool makes.

    deploy_lint.py manifests LABEL FILE... [--kustomization K] [--out DIR]
        One set of Kubernetes objects (the files of deploy/kubernetes, or one
        `helm template` output): pods, Service, ServiceMonitor, PDB, ConfigMap and
        PrometheusRule agree with each other and with what churnwatch needs (probes on
        /healthz and /readyz, instance id from the pod name, every [kafka.client_env]
        variable defined, grace period above kafka.shutdown_timeout, non-root and
        read-only, ...). With --out, writes DIR/LABEL.toml (the mounted churnwatch.toml)
        and DIR/LABEL.env (the literal CHURNWATCH_* env vars) for `churnwatch
        check-config`.
    deploy_lint.py rule-tests RULES TESTS
        Every alert of RULES has a firing and a not-firing case in TESTS, and TESTS names
        no alert that RULES lacks.
    deploy_lint.py metric-refs METRICS_RS FILE...
        Every churnwatch_* metric named in FILEs is registered in src/metrics.rs or a module's metrics.rs (with
        _bucket/_sum/_count for histograms).
    deploy_lint.py dashboard JSON --promql-out RULEFILE
        Grafana dashboard structure (uid, datasource variable used by every panel and
        target, unique ids, grid), and writes every query as a recording rule with the
        Grafana variables substituted, for `promtool check rules` to parse.
    deploy_lint.py yaml FILE...
        YAML syntax, duplicate keys included.

Needs PyYAML; Python 3.11+ (tomllib).
"""
import argparse
import json
import re
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore

ERRORS = []


def err(msg):
    ERRORS.append(msg)
    print(f"  FAIL {msg}", file=sys.stderr)


def ok(msg):
    print(f"  ok {msg}")


class UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_all(path):
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d]


def duration_ms(s):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(s).strip())
    if not m:
        return None
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]


def env_value(raw):
    """Like churnwatch's env override parsing: TOML value, else a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- manifests
def check_manifests(label, files, kustomization, out, rules_path):
    docs = []
    for f in files:
        for d in load_all(f):
            docs.append((f, d))
    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    print(f"{label}: {len(docs)} objects: " + ", ".join(
        f"{k} {len(v)}" for k, v in sorted(by_kind.items(), key=lambda kv: str(kv[0]))))

    if kustomization:
        k = yaml.safe_load(Path(kustomization).read_text())
        listed = set(k.get("resources", []))
        kdir = Path(kustomization).parent
        for r in sorted(listed):
            if not (kdir / r).exists():
                err(f"{label}: kustomization lists {r}, which does not exist")
        for f in sorted(kdir.glob("*.yaml")):
            if f.name not in listed and f.name != "kustomization.yaml" and ".example." not in f.name:
                err(f"{label}: {f.name} is not listed in kustomization.yaml")
        if not ERRORS:
            ok(f"{label}: kustomization.yaml lists all {len(listed)} manifests")

    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    if len(workloads) != 1:
        err(f"{label}: expected one Deployment or StatefulSet, found {len(workloads)}")
        return
    w = workloads[0]
    wname = f"{w['kind']}/{w['metadata']['name']}"
    pod = w["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    if not selects(w["spec"]["selector"].get("matchLabels", {}), pod_labels):
        err(f"{label}: {wname} selector does not match its pod labels")
    if w["kind"] == "StatefulSet":
        svc_names = {s["metadata"]["name"] for s in by_kind.get("Service", [])}
        if w["spec"].get("serviceName") not in svc_names:
            err(f"{label}: {wname} serviceName {w['spec'].get('serviceName')!r} is not a Service of this set")
        if w["spec"].get("podManagementPolicy") != "Parallel":
            err(f"{label}: {wname} should use podManagementPolicy: Parallel")
        if w["spec"].get("volumeClaimTemplates"):
            err(f"{label}: {wname} has volumeClaimTemplates, but churnwatch needs no disk")
    containers = [c for c in spec["containers"] if c["name"] == "churnwatch"]
    if len(containers) != 1:
        err(f"{label}: {wname} has no container named churnwatch")
        return
    c = containers[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http-metrics") != 9464:
        err(f"{label}: container port http-metrics must be 9464, got {ports}")

    # security
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        err(f"{label}: runAsNonRoot is not set")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid is not None and uid == 0:
        err(f"{label}: runs as uid 0")
    if csc.get("readOnlyRootFilesystem") is not True:
        err(f"{label}: readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        err(f"{label}: allowPrivilegeEscalation is not false")
    if "ALL" not in (csc.get("capabilities", {}).get("drop") or []):
        err(f"{label}: capabilities do not drop ALL")
    if spec.get("automountServiceAccountToken") is not False:
        err(f"{label}: the pod mounts a service account token it does not need")

    # probes
    want = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": None}
    for probe, path in want.items():
        p = c.get(probe)
        if not p:
            err(f"{label}: {probe} is missing")
            continue
        hg = p.get("httpGet", {})
        if path and hg.get("path") != path:
            err(f"{label}: {probe} path is {hg.get('path')!r}, expected {path}")
        if hg.get("path") not in ("/healthz", "/readyz"):
            err(f"{label}: {probe} path {hg.get('path')!r} is not an endpoint of churnwatch")
        if hg.get("port") not in ports and hg.get("port") not in ports.values():
            err(f"{label}: {probe} port {hg.get('port')!r} is not a container port")
    sp = c.get("startupProbe", {})
    if sp and sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) < 600:
        err(f"{label}: startupProbe allows less than 600 s (a partition restore may take that long)")

    # resources
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        if "memory" not in res.get(kind, {}):
            err(f"{label}: no memory {kind}")
    if "cpu" not in res.get("requests", {}):
        err(f"{label}: no cpu request")

    # env
    env = {e["name"]: e for e in c.get("env", [])}
    iid = env.get("CHURNWATCH_KAFKA__INSTANCE_ID", {})
    if iid.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        err(f"{label}: CHURNWATCH_KAFKA__INSTANCE_ID must come from the pod name (fieldRef metadata.name)")
    literal_env = {k: v["value"] for k, v in env.items() if "value" in v}
    secret_refs = {k: v["valueFrom"]["secretKeyRef"] for k, v in env.items()
                   if "secretKeyRef" in v.get("valueFrom", {})}

    # config file
    config_path = literal_env.get("CHURNWATCH_CONFIG")
    args = c.get("args", [])
    if "--config" in args:
        config_path = args[args.index("--config") + 1]
    if not args or args[0] != "run":
        err(f"{label}: container args must start with 'run', got {args}")
    toml_text = None
    if not config_path:
        err(f"{label}: no config file given (CHURNWATCH_CONFIG or --config)")
    else:
        mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
        parent, key = config_path.rsplit("/", 1)
        m = mounts.get(parent)
        if not m:
            err(f"{label}: {config_path} is not in a mounted volume")
        else:
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            cm_name = vols.get(m["name"], {}).get("configMap", {}).get("name")
            cms = {cm["metadata"]["name"]: cm for cm in by_kind.get("ConfigMap", [])}
            if cm_name not in cms:
                err(f"{label}: volume {m['name']} is not a ConfigMap of this set ({cm_name})")
            elif key not in cms[cm_name].get("data", {}):
                err(f"{label}: ConfigMap {cm_name} has no key {key}")
            else:
                toml_text = cms[cm_name]["data"][key]
    cfg = {}
    if toml_text is not None:
        try:
            cfg = tomllib.loads(toml_text)
            ok(f"{label}: churnwatch.toml parses ({len(toml_text.splitlines())} lines)")
        except tomllib.TOMLDecodeError as e:
            err(f"{label}: churnwatch.toml is not valid TOML: {e}")
    # apply literal env overrides, as churnwatch does
    for var, raw in literal_env.items():
        if var.startswith("CHURNWATCH_") and "__" in var:
            path = [s.lower() for s in var[len("CHURNWATCH_"):].split("__")]
            t = cfg
            for seg in path[:-1]:
                t = t.setdefault(seg, {})
            t[path[-1]] = env_value(raw)
    kafka = cfg.get("kafka", {})
    for key, var in kafka.get("client_env", {}).items():
        if var not in env:
            err(f"{label}: [kafka.client_env] {key} reads ${var}, which the container does not define")
        else:
            ok(f"{label}: {key} comes from ${var}"
               + (f" (Secret {secret_refs[var]['name']}/{secret_refs[var]['key']})" if var in secret_refs else ""))
    notify = cfg.get("notify", {})
    for rcv in notify.get("receivers", []):
        for key, var in rcv.items():
            if key.endswith("_env") and isinstance(var, str) and var:
                if var not in env:
                    err(f"{label}: notify receiver {rcv.get('name')!r} {key} = {var!r}, "
                        "which the container does not define")
                else:
                    ok(f"{label}: notify receiver {rcv.get('name')!r} reads ${var}")
    accounts = notify.get("accounts_file", "")
    if notify.get("enabled") and accounts:
        mounted = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
        if not any(accounts.startswith(m) for m in mounted):
            err(f"{label}: notify.accounts_file {accounts} is not in a mounted volume")
        else:
            ok(f"{label}: notify.accounts_file {accounts} is in a mounted volume")
    listen = cfg.get("server", {}).get("listen", "0.0.0.0:9464")
    if not listen.endswith(":9464"):
        err(f"{label}: server.listen {listen!r} is not port 9464, which the probes and Service use")
    shutdown = duration_ms(kafka.get("shutdown_timeout", "20s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if shutdown is None:
        err(f"{label}: kafka.shutdown_timeout {kafka.get('shutdown_timeout')!r} is not a duration")
    elif grace * 1000 < shutdown + 5000:
        err(f"{label}: terminationGracePeriodSeconds {grace} < kafka.shutdown_timeout {shutdown / 1000:g} s + 5 s")
    else:
        ok(f"{label}: terminationGracePeriodSeconds {grace} >= shutdown_timeout {shutdown / 1000:g} s + 5 s")
    if cfg.get("log", {}).get("format", "text") != "json":
        err(f"{label}: log.format should be json in a cluster (log pipelines)")

    sa = spec.get("serviceAccountName")
    if sa and sa != "default" and sa not in {s["metadata"]["name"] for s in by_kind.get("ServiceAccount", [])}:
        print(f"  note {label}: ServiceAccount {sa} is not part of this set (must exist already)")

    # Service
    svcs = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") != "None"]
    if len(svcs) != 1:
        err(f"{label}: expected one (non-headless) Service, found {len(svcs)}")
        svc = None
    else:
        svc = svcs[0]
        if not selects(svc["spec"].get("selector", {}), pod_labels):
            err(f"{label}: Service selector does not match the pods")
        sports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
        hp = sports.get("http-metrics")
        if not hp:
            err(f"{label}: Service has no port named http-metrics")
        elif hp.get("targetPort") not in ("http-metrics", 9464):
            err(f"{label}: Service port http-metrics targets {hp.get('targetPort')!r}")
        else:
            ok(f"{label}: Service {svc['metadata']['name']} selects the pods, port http-metrics -> 9464")

    # ServiceMonitor
    for sm in by_kind.get("ServiceMonitor", []):
        if svc is None:
            break
        sel = sm["spec"].get("selector", {}).get("matchLabels", {})
        if not selects(sel, svc["metadata"].get("labels", {})):
            err(f"{label}: ServiceMonitor selector {sel} does not match the Service labels")
        for ep in sm["spec"].get("endpoints", []):
            if ep.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                err(f"{label}: ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port")
            if ep.get("path", "/metrics") != "/metrics":
                err(f"{label}: ServiceMonitor path {ep.get('path')!r} is not /metrics")
        jl = sm["spec"].get("jobLabel")
        job = svc["metadata"].get("labels", {}).get(jl) if jl else svc["metadata"]["name"]
        if job != "churnwatch":
            err(f"{label}: scraped series get job={job!r}, but the alerting rules select job=\"churnwatch\"")
        else:
            ok(f"{label}: ServiceMonitor selects the Service; series get job=\"churnwatch\"")

    # PDB
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selects(pdb["spec"].get("selector", {}).get("matchLabels", {}), pod_labels):
            err(f"{label}: PodDisruptionBudget does not select the pods")
        elif "maxUnavailable" not in pdb["spec"]:
            err(f"{label}: PodDisruptionBudget should use maxUnavailable")
        else:
            ok(f"{label}: PodDisruptionBudget maxUnavailable {pdb['spec']['maxUnavailable']} selects the pods")

    # PrometheusRule = rules.yml
    want_groups = yaml.safe_load(Path(rules_path).read_text())["groups"]
    for pr in by_kind.get("PrometheusRule", []):
        if pr["spec"].get("groups") != want_groups:
            err(f"{label}: PrometheusRule {pr['metadata']['name']} differs from {rules_path}")
        else:
            n = sum(len(g["rules"]) for g in want_groups)
            ok(f"{label}: PrometheusRule carries the {n} rules of {rules_path}")

    if out:
        outd = Path(out)
        outd.mkdir(parents=True, exist_ok=True)
        if toml_text is not None:
            (outd / f"{label}.toml").write_text(toml_text)
        env_lines = [f"{k}={v}" for k, v in sorted(literal_env.items())
                     if k.startswith("CHURNWATCH_") and k != "CHURNWATCH_CONFIG"]
        # instance id and secrets come from the pod at run time: stand-ins
        env_lines.append("CHURNWATCH_KAFKA__INSTANCE_ID=churnwatch-0")
        env_lines += [f"{k}=stand-in" for k in sorted(secret_refs)]
        (outd / f"{label}.env").write_text("\n".join(env_lines) + "\n")


# ---------------------------------------------------------------- rule tests
def check_rule_tests(rules_path, tests_path):
    rules = yaml.safe_load(Path(rules_path).read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    tests = yaml.load(Path(tests_path).read_text(), Loader=UniqueKeyLoader)
    firing, silent = {}, {}
    for t in tests.get("tests", []):
        for case in t.get("alert_rule_test", []):
            name = case["alertname"]
            (firing if case.get("exp_alerts") else silent).setdefault(name, []).append(t.get("name", "?"))
    for name in sorted(set(firing) | set(silent)):
        if name not in alerts:
            err(f"{tests_path} tests {name}, which {rules_path} does not define")
    for a in alerts:
        if a not in firing:
            err(f"{a}: no test case where it fires")
        if a not in silent:
            err(f"{a}: no test case where it must not fire")
        if a in firing and a in silent:
            ok(f"{a}: {len(firing[a])} firing, {len(silent[a])} not-firing case(s)")
    if len(set(alerts)) != len(alerts):
        err(f"{rules_path}: duplicate alert names")


# ---------------------------------------------------------------- metric names
def registered_metrics(metrics_rs):
    main = Path(metrics_rs).read_text()
    ns = re.search(r'new_custom\(Some\("([a-z_]+)"', main)
    ns = ns.group(1) if ns else "churnwatch"
    # Modules register their own metrics in the same registry from a metrics.rs of
    # their own (src/actions/metrics.rs, src/inbox/view/metrics.rs).
    src = main + "".join(p.read_text() for p in sorted(Path(metrics_rs).parent.rglob("metrics.rs"))
                         if p != Path(metrics_rs))
    names, hist = set(), set()
    for m in re.finditer(r'\b(?:(IntCounterVec|IntGaugeVec|HistogramVec|IntCounter|IntGauge)::new|(secs))\(\s*'
                         r'(?:(?:Histogram)?Opts::new\(\s*)?"([a-z0-9_]+)"', src):
        kind = m.group(1) or m.group(2)
        full = f"{ns}_{m.group(3)}"
        names.add(full)
        if kind in ("HistogramVec", "secs"):
            hist.add(full)
    return names, hist


def check_metric_refs(metrics_rs, files):
    names, hist = registered_metrics(metrics_rs)
    if len(names) < 10:
        err(f"{metrics_rs}: found only {len(names)} metrics; has the registration style changed?")
        return
    known = set(names) | {h + s for h in hist for s in ("_bucket", "_sum", "_count")}
    for f in files:
        text = Path(f).read_text()
        refs = set(re.findall(r"\bchurnwatch_[a-z0-9_]+", text))
        missing = sorted(r for r in refs if r not in known)
        for r in missing:
            err(f"{f}: metric {r} is not registered in {metrics_rs}")
        if not missing:
            ok(f"{f}: all {len(refs)} churnwatch_* metric names exist in {metrics_rs}")


# ---------------------------------------------------------------- dashboard
def check_dashboard(path, promql_out):
    d = json.loads(Path(path).read_text())
    if not d.get("uid"):
        err(f"{path}: no uid")
    if not d.get("title"):
        err(f"{path}: no title")
    tvars = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = [v for v in tvars.values() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds:
        err(f"{path}: no Prometheus datasource template variable")
        return
    dsref = "${" + ds[0]["name"] + "}"
    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)) or None in ids:
        err(f"{path}: panel ids are missing or not unique")
    exprs = []
    for p in panels:
        gp = p.get("gridPos", {})
        if gp.get("x", 0) + gp.get("w", 0) > 24:
            err(f"{path}: panel {p.get('title')!r} is wider than the grid")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != dsref:
            err(f"{path}: panel {p.get('title')!r} does not use the {dsref} datasource")
        if not p.get("targets"):
            err(f"{path}: panel {p.get('title')!r} has no query")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != dsref:
                err(f"{path}: a query of {p.get('title')!r} does not use {dsref}")
            exprs.append((p.get("title"), t.get("expr", "")))
    for v in tvars.values():
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") != dsref:
            err(f"{path}: variable {v['name']} does not use {dsref}")
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    for name in tvars:
        subst[f"${name}"] = ".+"
        subst["${" + name + "}"] = ".+"
    rules = []
    for i, (title, e) in enumerate(exprs):
        for k in sorted(subst, key=len, reverse=True):
            e = e.replace(k, subst[k])
        if "$" in e:
            err(f"{path}: panel {title!r}: unknown variable in {e}")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    Path(promql_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    ok(f"{path}: uid {d.get('uid')!r}, {len(panels)} panels, {len(exprs)} queries, datasource variable {dsref}")


def check_yaml(files):
    for f in files:
        try:
            docs = load_all(f)
            ok(f"{f}: valid YAML ({len(docs)} document(s))")
        except yaml.YAMLError as e:
            err(f"{f}: {e}")


def main():
    ap = argparse.ArgumentParser(description="churnwatch deployment consistency checks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("label")
    m.add_argument("files", nargs="+")
    m.add_argument("--kustomization")
    m.add_argument("--out")
    m.add_argument("--rules", default=str(Path(__file__).resolve().parents[1] / "prometheus" / "rules.yml"))
    r = sub.add_parser("rule-tests")
    r.add_argument("rules")
    r.add_argument("tests")
    mr = sub.add_parser("metric-refs")
    mr.add_argument("metrics_rs")
    mr.add_argument("files", nargs="+")
    db = sub.add_parser("dashboard")
    db.add_argument("json")
    db.add_argument("--promql-out", required=True)
    y = sub.add_parser("yaml")
    y.add_argument("files", nargs="+")
    a = ap.parse_args()
    try:
        if a.cmd == "manifests":
            check_manifests(a.label, a.files, a.kustomization, a.out, a.rules)
        elif a.cmd == "rule-tests":
            check_rule_tests(a.rules, a.tests)
        elif a.cmd == "metric-refs":
            check_metric_refs(a.metrics_rs, a.files)
        elif a.cmd == "dashboard":
            check_dashboard(a.json, a.promql_out)
        elif a.cmd == "yaml":
            check_yaml(a.files)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, OSError) as e:
        err(f"{a.cmd}: {type(e).__name__}: {e}")
    if ERRORS:
        print(f"deploy_lint {a.cmd}: {len(ERRORS)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
