"""The deployment files (deploy/) as data, for the tests that validate them and the one
that runs the server from the rendered Deployment: rendering with ``kubectl kustomize``,
the server arguments, every PromQL expression and the metric names it reads."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
MONITORING = DEPLOY / "monitoring"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "docker-compose.yaml"
LOCK = DEPLOY / "docker" / "requirements.lock"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor the manifests are validated against


@functools.lru_cache(maxsize=None)
def kubectl() -> str | None:
    """kubectl with Kustomize 5 or later (the overlays use its `labels` and inline patches)."""
    path = shutil.which("kubectl")
    if not path:
        return None
    result = subprocess.run([path, "version", "--client"], capture_output=True, text=True, timeout=60)
    match = re.search(r"Kustomize Version: v(\d+)", result.stdout)
    return path if match and int(match.group(1)) >= 5 else None


def render(kustomization: Path) -> list[dict]:
    """The documents ``kubectl kustomize`` renders (what ``kubectl apply -k`` applies)."""
    result = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''}"
    return matches[0]


def server_container(docs: list[dict]) -> dict:
    (container,) = [c for c in find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "server"]
    return container


def image_files() -> dict[str, Path]:
    """Image path -> the repository file the Dockerfile copies there (files only)."""
    files = {}
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "COPY" and not parts[1].endswith("/"):
            files[parts[2]] = ROOT / parts[1]
    return files


def expand_args(args: list[str]) -> list[str]:
    """The container's arguments with each ``@FILE`` (a file in the image) replaced by the
    lines of the repository file the Dockerfile puts there, as argparse reads it."""
    files = image_files()
    out = []
    for arg in args:
        if arg.startswith("@"):
            assert arg[1:] in files, f"{arg[1:]} is not copied into the image by the Dockerfile"
            out += files[arg[1:]].read_text().splitlines()
        else:
            out.append(arg)
    return out


def option(args: list[str], name: str) -> str | None:
    """The last value given to ``--name`` (``--name=value`` or ``--name value``)."""
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(args):
            value = args[i + 1]
    return value


# -- PromQL --------------------------------------------------------------------------------

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "${datasource}": "prometheus"}


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana" / "dashboards" / "i2tt.json").read_text())


def rule_groups() -> list[dict]:
    return yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]


def adapter_rules() -> list[dict]:
    return yaml.safe_load((MONITORING / "prometheus-adapter.yaml").read_text())["rules"]


def keda_triggers() -> list[dict]:
    scaled = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())
    return scaled["spec"]["triggers"]


def expressions() -> dict[str, str]:
    """Every PromQL expression in deploy/, by where it is, Grafana and adapter template
    variables replaced by values they take."""
    exprs = {}
    for group in rule_groups():
        for rule in group["rules"]:
            exprs[f"rules.yaml {rule.get('record') or rule.get('alert')}"] = rule["expr"]
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            exprs[f"dashboard {panel['title']} {target['refId']}"] = expr
    for trigger in keda_triggers():
        exprs[f"keda {trigger['metadata']['query']}"] = trigger["metadata"]["query"]
    for rule in adapter_rules():
        series = rule["seriesQuery"]
        exprs[f"adapter seriesQuery {rule['name']['as']}"] = series
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", series).group(0)
        exprs[f"adapter metricsQuery {rule['name']['as']}"] = (
            rule["metricsQuery"].replace("<<.Series>>", name)
            .replace("<<.LabelMatchers>>", 'namespace="i2tt",pod="i2tt-0"')
            .replace("<<.GroupBy>>", "pod"))
    return exprs


def metric_names(expr: str) -> set[str]:
    import promql_parser

    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def recorded_names() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


# Metrics that deploy/ reads but a CPU-only test server cannot export: GPU metrics exist
# only where Triton sees a GPU, kube_* come from kube-state-metrics.
NOT_FROM_THIS_SERVER = {
    "nv_gpu_utilization": "exported only where Triton sees a GPU",
    "nv_gpu_memory_used_bytes": "exported only where Triton sees a GPU",
    "nv_gpu_memory_total_bytes": "exported only where Triton sees a GPU",
    "kube_pod_status_ready": "kube-state-metrics, not the server",
}


def server_metric_names() -> set[str]:
    """Every raw metric name deploy/ reads from the server (recording rules resolved)."""
    names = set()
    for expr in expressions().values():
        names |= metric_names(expr)
    return names - recorded_names() - set(NOT_FROM_THIS_SERVER)
