"""deploy/ checked offline with the real tools: kubectl kustomize renders every overlay,
kubernetes-validate (strict, pinned Kubernetes version), hadolint, the compose
specification, yamllint, PromQL parsing, and the invariants that keep pods alive while
they load, drain on shutdown and get shared memory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployfiles import (COMPOSE, DEPLOY, DOCKERFILE, K8S, KUBERNETES_VERSION, LOCK,
                         OVERLAYS, ROOT, adapter_rules, dashboard, expand_args,
                         expressions, find, kubectl, metric_names, option, recorded_names,
                         render, rule_groups, server_container)

BIN = Path(sys.executable).parent
OVERLAY_IDS = [p.name for p in OVERLAYS]


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return path


@pytest.fixture(scope="module", params=OVERLAYS, ids=OVERLAY_IDS)
def rendered(request) -> tuple[str, list[dict]]:
    if kubectl() is None:
        pytest.skip("no kubectl with Kustomize 5+ (it renders the Kustomize overlays)")
    return request.param.name, render(request.param)


def test_there_are_gpu_and_cpu_overlays():
    assert {"gpu", "cpu"} <= set(OVERLAY_IDS)


# -- schemas -------------------------------------------------------------------------------

BUILT_IN = {"Namespace", "Service", "PersistentVolumeClaim", "Deployment", "Job",
            "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"}


def test_every_document_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    _, docs = rendered
    assert BUILT_IN <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: see test_custom_resources_have_their_required_fields
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_examples_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    examples = sorted((K8S / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_validator_refuses_an_unknown_field(rendered):
    import kubernetes_validate

    _, docs = rendered
    deployment = yaml.safe_load(yaml.safe_dump(find(docs, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_custom_resources_have_their_required_fields(rendered):
    """The Prometheus Operator's CRD schemas are not shipped here: check what they require
    and what the operator needs to act."""
    _, docs = rendered
    monitor = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    metrics_service = find(docs, "Service", "i2tt")
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= metrics_service["metadata"]["labels"].items()
    ports = {p["name"] for p in metrics_service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"] and all(e["port"] in ports for e in monitor["spec"]["endpoints"])
    rule = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for r in group["rules"]:
            assert ("record" in r) != ("alert" in r) and isinstance(r["expr"], str)
            assert set(r) <= {"record", "alert", "expr", "for", "labels", "annotations",
                              "keep_firing_for"}


def test_the_prometheusrule_carries_the_rules_file():
    manifest = list(yaml.safe_load_all((K8S / "base" / "monitoring.yaml").read_text()))
    (rule,) = [d for d in manifest if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == rule_groups(), \
        "run .venv/bin/python deploy/monitoring/sync_prometheusrule.py"


# -- linters -------------------------------------------------------------------------------

def test_hadolint_passes_the_dockerfile():
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_follows_the_compose_specification():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes_every_yaml_file():
    files = sorted(str(p) for p in DEPLOY.rglob("*.yaml"))
    result = subprocess.run([tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"),
                             *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_promql_expression_parses():
    exprs = expressions()
    assert len(exprs) > 20
    for where, expr in exprs.items():
        try:
            metric_names(expr)
        except Exception as exc:  # the parser's own error type
            pytest.fail(f"{where}: {exc}\n{expr}")


def test_every_metric_the_autoscaler_reads_is_served_by_the_adapter(rendered):
    _, docs = rendered
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    served = {r["name"]["as"] for r in adapter_rules()}
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert wanted and wanted <= served
    for rule in adapter_rules():  # each adapter rule reads a recording rule that exists
        assert metric_names(rule["seriesQuery"]) <= recorded_names()
        assert re.fullmatch(rule["name"]["matches"], next(iter(metric_names(rule["seriesQuery"]))))
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_ensemble_is_left_out_of_the_autoscaling_inputs():
    for group in rule_groups():
        for rule in group["rules"]:
            if rule.get("record", "").startswith(("i2tt:pending", "i2tt:queue")):
                assert rule["expr"].count('model!="caption_tags"') == len(metric_names(rule["expr"]))


def test_the_dashboard_covers_what_operators_watch():
    names = set()
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            names |= metric_names(target["expr"].replace("$__rate_interval", "1m")
                                  .replace("$namespace", ".*"))
    for needed in ("nv_inference_request_success", "nv_inference_request_failure",
                   "nv_inference_request_summary_us", "nv_inference_queue_duration_us",
                   "nv_inference_exec_count", "nv_inference_pending_request_count",
                   "nv_cache_num_hits", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
                   "i2tt_rejected_inputs_total", "i2tt_generated_tokens_total",
                   "i2tt_items_per_execution_bucket", "i2tt_image_decode_seconds_bucket"):
        assert needed in names, needed


# -- invariants ----------------------------------------------------------------------------

def serve_args(docs) -> list[str]:
    container = server_container(docs)
    assert container["command"] == ["i2tt-server"]
    return expand_args(container["args"])


def seconds(value) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value))
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def test_probes_ask_the_servers_health_endpoints_on_its_http_port(rendered):
    _, docs = rendered
    container = server_container(docs)
    args = serve_args(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(option(args, "--http-port")), "grpc": int(option(args, "--grpc-port")),
                     "metrics": int(option(args, "--metrics-port"))}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == ports["http"]
    assert option(args, "--host") == "0.0.0.0"  # the launcher's default is loopback only


def test_startup_budget_is_at_least_ten_minutes(rendered):
    _, docs = rendered
    probe = server_container(docs)["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= 600
    # the launcher must not give up on loading before Kubernetes does
    assert 600 <= float(option(serve_args(docs), "--ready-timeout")) < budget


def test_grace_period_covers_the_pause_and_the_exit_timeout(rendered):
    _, docs = rendered
    spec = find(docs, "Deployment")["spec"]
    container = server_container(docs)
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    exit_timeout = int(option(serve_args(docs), "--exit-timeout"))
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > int(pause[1]) + exit_timeout
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_dev_shm_is_memory_backed_with_a_size_limit(rendered):
    _, docs = rendered
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in server_container(docs)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory" and volume["emptyDir"]["sizeLimit"]


def test_gpu_only_in_the_gpu_overlay(rendered):
    name, docs = rendered
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    resources = server_container(docs)["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    if name == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert option(serve_args(docs), "--batching") == "gpu"
    else:
        assert "nvidia.com/gpu" not in resources.get("limits", {})
    if name == "cpu":
        assert option(serve_args(docs), "--batching") == "cpu"


def test_pods_run_as_non_root_without_privileges(rendered):
    _, docs = rendered
    for kind in ("Deployment", "Job"):
        pod = find(docs, kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
    user = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")


def test_weights_are_mounted_read_only_from_the_volume_the_job_fills(rendered):
    _, docs = rendered
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (mount,) = [m for m in server_container(docs)["volumeMounts"] if m["mountPath"] == "/weights"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    job = find(docs, "Job", "i2tt-fetch-weights")["spec"]["template"]["spec"]
    (job_volume,) = [v for v in job["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == job_volume["persistentVolumeClaim"]["claimName"]
    assert "i2tt-server fetch-weights --dest /weights" in " ".join(job["containers"][0]["args"])
    assert option(serve_args(docs), "--weights") == "/weights"
    assert option(serve_args(docs), "--model-repository") == "/models"


def test_grpc_goes_through_a_headless_service_and_clients_are_fenced(rendered):
    _, docs = rendered
    grpc = find(docs, "Service", "i2tt-grpc")
    assert grpc["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in grpc["spec"]["ports"]] == [8001]
    assert int(option(serve_args(docs), "--grpc-max-connection-age")) > 0
    policy = find(docs, "NetworkPolicy")["spec"]
    by_port = {tuple(sorted(p["port"] for p in rule["ports"])): rule["from"] for rule in policy["ingress"]}
    assert by_port[(8000, 8001)][0]["podSelector"]["matchLabels"] == {"i2tt.io/client": "true"}
    assert "namespaceSelector" in by_port[(8002,)][0]
    assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1


def test_compose_runs_the_same_arguments_with_shared_memory_and_a_patient_healthcheck():
    compose = yaml.safe_load(COMPOSE.read_text())
    servers = {name: s for name, s in compose["services"].items()
               if s["image"].startswith("i2tt-server")}
    assert {tuple(s["profiles"]) for s in servers.values()} == {("gpu",), ("cpu",)}
    args = expand_args(servers["i2tt"]["command"][1:])
    for name, service in servers.items():
        assert service["command"][:2] == ["serve", "@/etc/i2tt/serve.args"]
        assert option(service["command"], "--batching") == name.removeprefix("i2tt-").replace("i2tt", "gpu")
        assert seconds(service["healthcheck"]["start_period"]) >= 600
        assert "/v2/health/ready" in " ".join(service["healthcheck"]["test"])
        assert seconds(service["stop_grace_period"]) > int(option(args, "--exit-timeout"))
        assert service["shm_size"] and service["ulimits"]
    assert servers["i2tt"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_the_lock_pins_everything_for_the_containers_python():
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    assert pins["numpy"] < Version("2")
    assert pins["nvidia-cuda-runtime-cu12"].release[:2] == (12, 6)  # the image's CUDA 12.6
    pyproject = (ROOT / "server" / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[(.*?)\]", pyproject, re.S).group(1)
    for spec in re.findall(r'"([^"]+)"', deps):
        requirement = Requirement(spec)
        if requirement.marker is not None and requirement.name == "nvidia-pytriton":
            continue  # the container has its own tritonserver
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"


# -- the image's Python --------------------------------------------------------------------

PY310 = Path("/root/.pyenv/versions/3.10.13/bin/python3.10")


def python310() -> str | None:
    for candidate in (str(PY310), shutil.which("python3.10")):
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(python310() is None, reason="no python3.10 here (the container runs 3.10)")
def test_the_server_package_compiles_under_python_3_10(tmp_path):
    result = subprocess.run([python310(), "-m", "compileall", "-q", "-d", "src",
                             str(ROOT / "server" / "i2tt_server"), str(ROOT / "model_repository")],
                            capture_output=True, text=True, env={"PYTHONPYCACHEPREFIX": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_finds_nothing_newer_than_python_3_10():
    result = subprocess.run([tool("vermin"), "--target=3.10-", "--no-tips", "--violations",
                             "--eval-annotations", "--backport", "typing_extensions",
                             str(ROOT / "server" / "i2tt_server"), str(ROOT / "model_repository")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the README's commands are the ones validated here -------------------------------------

def test_deploy_readme_commands_are_the_tested_ones():
    readme = (DEPLOY / "README.md").read_text() + (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", (DEPLOY / "README.md").read_text()):
        assert (DEPLOY / target).exists(), f"deploy/README.md links to missing {target}"
    for path in re.findall(r"kubectl apply -f (\S+)", readme):
        assert (ROOT / path).is_file() and (ROOT / path).parent == K8S / "examples", path
    applied = re.findall(r"kubectl apply -k (\S+)", readme)
    assert "deploy/k8s/overlays/gpu" in applied
    for path in applied:
        assert (ROOT / path / "kustomization.yaml").is_file(), path
        assert ROOT / path in OVERLAYS, f"{path} is not among the rendered overlays"
    compose = yaml.safe_load(COMPOSE.read_text())
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    for path, profile in re.findall(r"docker compose -f (\S+) --profile (\S+)", readme):
        assert ROOT / path == COMPOSE and profile in profiles


def render_with_component(tmp_path: Path, overlay: str, component: str) -> list[dict]:
    """An overlay with an optional component added, as a user's kustomization would."""
    if kubectl() is None:
        pytest.skip("no kubectl with Kustomize 5+ (it renders the Kustomize overlays)")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
        "components": [os.path.relpath(K8S / "components" / component, tmp_path)]}))
    return render(tmp_path)


def test_the_api_key_component_adds_the_key_file_from_its_secret(tmp_path):
    import kubernetes_validate

    docs = render_with_component(tmp_path, "gpu", "api-key")
    for doc in docs:
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    container = server_container(docs)
    key_file = option(container["args"], "--api-key-file")
    (mount,) = [m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/")]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "i2tt-api-key" and mount["readOnly"]
    assert option(container["args"], "--batching") == "gpu"  # the overlay's own patch kept


def test_the_build_context_keeps_what_the_dockerfile_copies():
    kept = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")]
    sources = [line.split()[1].rstrip("/") for line in DOCKERFILE.read_text().splitlines()
               if line.startswith("COPY ") and "--from=" not in line]
    assert sources
    for source in sources:
        assert source in kept, f"{source} is excluded from the build context by .dockerignore"
        assert (ROOT / source).exists(), source


def test_the_keda_component_replaces_the_hpa_with_the_same_inputs(tmp_path):
    import kubernetes_validate

    docs = render_with_component(tmp_path, "cpu", "keda")
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}
    for doc in docs:
        if doc["apiVersion"].split("/")[0] not in ("monitoring.coreos.com", "keda.sh"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    scaled = find(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == find(docs, "Deployment")["metadata"]["namespace"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == find(docs, "Deployment")["metadata"]["name"]
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
        assert trigger["metadata"]["serverAddress"].startswith("http")
        assert metric_names(trigger["metadata"]["query"]) <= recorded_names()
