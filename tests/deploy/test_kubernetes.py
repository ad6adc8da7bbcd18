"""The Kubernetes manifests: each document validated against the Kubernetes API's own schemas
(kubernetes-validate, strict: no unknown fields, offline), then what the schemas cannot say:
non-root pods, one workers pod with the signer beside it, the references between objects,
and every ``satvault`` command in them against the real command line. ``kubectl apply
--dry-run=client`` is not used: it asks an API server for its resource types first."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy._files import ROOT, k8s_documents, pod_spec, satvault_command, shell_satvault

K8S_VERSION = "1.30.0"
DOCS = k8s_documents()


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize(("path", "doc"), DOCS,
                         ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS])
def test_schema(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    if doc["kind"] != "Namespace":
        assert doc["metadata"]["namespace"] == "satvault", path


def test_schema_check_catches_a_mistake() -> None:
    broken = {**_one("Deployment", "satvault-api")}
    broken["spec"] = {**broken["spec"], "replica": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _satvault_argv(container: dict[str, Any]) -> list[str] | None:
    if not container["image"].startswith("satvault:"):
        return None
    command, args = container.get("command"), container.get("args", [])
    if command == ["sh", "-c"]:
        return shell_satvault(args[-1])
    assert command is None, "the image's entrypoint is satvault"
    return list(args)


def test_pods_run_as_non_root_with_satvault_commands_that_exist() -> None:
    workloads = [d for _, d in DOCS if pod_spec(d) is not None]
    assert {d["kind"] for d in workloads} >= {"Deployment", "StatefulSet", "Job", "CronJob"}
    for doc in workloads:
        spec = pod_spec(doc)
        assert spec is not None
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, doc["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            argv = _satvault_argv(c)
            assert argv is not None, f"{c['name']} runs the satvault image"
            satvault_command(argv)
            for probe in ("readinessProbe", "livenessProbe"):
                command = c.get(probe, {}).get("exec", {}).get("command")
                if command:
                    assert command[0] == "satvault"
                    satvault_command(command[1:])


def test_api_workers_signer_and_migration() -> None:
    api = _one("Deployment", "satvault-api")
    assert api["spec"]["replicas"] >= 2
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["serve", "--role", "api"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"

    workers = _one("StatefulSet", "satvault-workers")
    assert workers["spec"]["replicas"] == 1
    spec = workers["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    assert containers["workers"]["args"][:3] == ["serve", "--role", "workers"]
    signer = containers["signer"]
    assert signer["args"][:2] == ["signer", "serve"]
    socket = signer["args"][signer["args"].index("--socket") + 1]
    config = _one("ConfigMap", "satvault-config")["data"]
    assert config["SATVAULT_SIGNER_SOCKET"] == socket
    volumes = {v["name"]: v for v in spec["volumes"]}

    def mounted(c: dict[str, Any], path: str) -> str:
        (name,) = [m["name"] for m in c["volumeMounts"] if m["mountPath"] == path]
        return name

    shared = mounted(signer, posixpath.dirname(socket))
    assert mounted(containers["workers"], posixpath.dirname(socket)) == shared
    assert "emptyDir" in volumes[shared], "a socket cannot live on a network volume"
    seed_file = signer["args"][signer["args"].index("--seed-file") + 1]
    seed_volume = mounted(signer, posixpath.dirname(seed_file))
    assert volumes[seed_volume]["secret"]["secretName"] == "satvault-signer"
    holders = [c["name"] for p, d in DOCS if (s := pod_spec(d))
               for c in s["containers"]
               if any(m["name"] == seed_volume for m in c.get("volumeMounts", []))]
    assert holders == ["signer"], "only the signer's container sees the seed"
    assert all("satvault-signer" not in str(pod_spec(d)) for _, d in DOCS
               if d is not workers and pod_spec(d) is not None)

    job = _one("Job", "satvault-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_references_between_objects() -> None:
    config_maps = {d["metadata"]["name"]: d for d in _by_kind("ConfigMap")}
    services = {d["metadata"]["name"]: d for d in _by_kind("Service")}
    operations = (ROOT / "docs" / "operations.md").read_text()
    pods = [(d, s) for _, d in DOCS if (s := pod_spec(d)) is not None]
    for _doc, spec in pods:
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    assert r["key"] in config_maps[r["name"]]["data"]
                if "secretKeyRef" in ref:  # created by the operator: documented there
                    r = ref["secretKeyRef"]
                    assert f"`{r['name']}`" in operations and f"`{r['key']}`" in operations, r
        for v in spec.get("volumes", []):
            if "secret" in v:
                assert f"`{v['secret']['secretName']}`" in operations
                for item in v["secret"].get("items", []):
                    assert f"`{item['key']}`" in operations, item
    for name, svc in services.items():
        selector = svc["spec"]["selector"]
        targets = [s for d, s in pods if d["kind"] in ("Deployment", "StatefulSet")
                   and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert targets, f"service {name} selects no pods"
        ports = {p["name"] for s in targets for c in s["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)
    for ingress in _by_kind("Ingress"):
        assert ingress["spec"]["tls"][0]["secretName"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                port_names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in port_names
