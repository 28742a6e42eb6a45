#!/usr/bin/env python3
"""Copies deploy/prometheus/rules.yml into the objects that must carry the same rules.

    python3 deploy/prometheus/sync-rules.py          write them
    python3 deploy/prometheus/sync-rules.py --check  exit 1 if any is out of date

Targets:
  deploy/kubernetes/prometheusrule.yaml    PrometheusRule whose spec is rules.yml's groups
  deploy/helm/churnwatch/files/rules.yml   byte copy, read by templates/prometheusrule.yaml

The rules text is copied verbatim (comments included), indented under `spec:`, so the
Prometheus templates in annotations ({{ $labels.x }}) reach Prometheus untouched.
Standard library only.
"""
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
SOURCE = DEPLOY / "prometheus" / "rules.yml"
K8S = DEPLOY / "kubernetes" / "prometheusrule.yaml"
HELM = DEPLOY / "helm" / "churnwatch" / "files" / "rules.yml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/prometheus/sync-rules.py: edit that
# file and rerun the script (scripts/check-deploy.sh fails when this copy is stale).
#
# Prometheus Operator picks PrometheusRules by its ruleSelector (and
# ruleNamespaceSelector): add the label your Prometheus selects, e.g. with
# kube-prometheus-stack `release: <its release name>`, in a kustomize overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: churnwatch
  labels:
    app.kubernetes.io/name: churnwatch
    app.kubernetes.io/instance: churnwatch
    app.kubernetes.io/component: alerting-rules
    app.kubernetes.io/part-of: churnwatch
spec:
"""


def render_k8s(rules: str) -> str:
    lines = rules.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    except StopIteration:
        sys.exit(f"{SOURCE}: no top-level 'groups:' line")
    body = "\n".join(("  " + l) if l.strip() else "" for l in lines[start:])
    return HEADER + body + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    rules = SOURCE.read_text()
    wanted = {K8S: render_k8s(rules), HELM: rules}
    stale = []
    for path, text in wanted.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"sync-rules: wrote {path.relative_to(DEPLOY.parent)}")
    if stale:
        for p in stale:
            print(f"sync-rules: {p.relative_to(DEPLOY.parent)} is out of date with "
                  f"deploy/prometheus/rules.yml; run python3 deploy/prometheus/sync-rules.py",
                  file=sys.stderr)
        return 1
    if check:
        print("sync-rules: PrometheusRule copies match deploy/prometheus/rules.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
