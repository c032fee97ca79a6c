"""Kubernetes manifests: `accel services deploy NAME --target kubernetes …
--dry-run -o yaml` against the official API schemas.

The YAML stream is read with PyYAML (a YAML 1.1 reader, as kubectl's) and
every object is validated by PyPI `kubernetes-validate` in strict mode
(unknown fields rejected) against the OpenAPI schemas of several Kubernetes
releases it ships offline: 1.31, 1.33 (the k8s-openapi feature accel builds
with) and 1.37 (the newest). A schema that cannot be found is a failure,
not a skip. On top, the cross-object wiring the schemas cannot see: the
labels, selectors matching the pod template, probes on the named HTTP port,
the Secret and the HPA target that the Deployment refers to.

No cluster is needed: `--dry-run` prints and exits. The apply / wait /
delete path is tested in Rust against a stand-in API server
(crates/accel-deploy/tests/deploy/kube.rs).
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support import accel_bin, accel_env

VERSIONS = ("1.31.0", "1.33.0", "1.37.0")
IMAGE = "registry.example:5000/team/resnet:3"
DIGEST_IMAGE = "registry.example:5000/team/resnet@sha256:" + "0123456789abcdef" * 4
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "accel.dev/service")


def deploy(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`accel services deploy …` in a fresh ACCEL_HOME and HOME without a
    kubeconfig (a dry run needs no cluster)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = accel_env(tmp_path / "accel-home", {"HOME": str(home)})
    env.pop("KUBECONFIG", None)
    cp = subprocess.run(
        [str(accel_bin()), "services", "deploy", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and cp.returncode != 0:
        raise AssertionError(
            f"`accel services deploy {' '.join(args)}` exited {cp.returncode}\n"
            f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
        )
    return cp


def dry_run(tmp_path: Path, name: str, *args: str) -> list[dict]:
    cp = deploy(tmp_path, name, "--target", "kubernetes", *args, "--dry-run", "-o", "yaml")
    docs = [d for d in yaml.safe_load_all(cp.stdout) if d is not None]
    assert docs, f"no YAML documents in:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return docs


def validate_all(docs: list[dict]) -> None:
    for version in VERSIONS:
        for doc in docs:
            what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} against Kubernetes {version}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(f"{what}: {path}: {e.message}") from None
            except kubernetes_validate.SchemaNotFoundError as e:
                raise AssertionError(f"{what}: no schema: {e.message}") from None


def by_kind(docs: list[dict]) -> dict[str, dict]:
    out = {}
    for d in docs:
        assert d["kind"] not in out, f"two {d['kind']} objects"
        out[d["kind"]] = d
    return out


def check_wiring(docs: list[dict], name: str, namespace: str) -> None:
    """What the schemas cannot check: the objects refer to each other."""
    objs = by_kind(docs)
    for d in docs:
        labels = d["metadata"]["labels"]
        assert {k: labels.get(k) for k in LABELS} == {
            "app.kubernetes.io/name": "accel",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "accel",
            "accel.dev/service": name,
        }, d["metadata"]
        assert d["metadata"]["namespace"] == namespace

    dep = objs["Deployment"]
    assert dep["metadata"]["name"] == name
    pod = dep["spec"]["template"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector and all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())

    svc = objs["Service"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == selector

    spec = pod["spec"]
    (c,) = spec["containers"]
    port_names = {p["name"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "http"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in port_names

    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True  # ACCEL_HOME is /tmp/accel, an emptyDir
    assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["resources"]["requests"] and c["resources"]["limits"]

    env = {e["name"]: e for e in c["env"]}
    assert env["ACCEL_HOST"]["value"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["ACCEL_GRPC_PORT"]["value"] == str(ports["grpc"])
    assert env["ACCEL_HTTP_PORT"]["value"] == str(ports["http"])

    if "Secret" in objs:
        secret = objs["Secret"]
        ref = env["ACCEL_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret.get("data", {}) or ref["key"] in secret.get("stringData", {})
    else:
        assert "ACCEL_API_KEYS" not in env

    if "HorizontalPodAutoscaler" in objs:
        target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def test_dry_run_with_autoscale_and_auth_validates(tmp_path):
    docs = dry_run(
        tmp_path, "resnet", "--image-ref", IMAGE, "--replicas", "2", "--autoscale", "2:5:70", "--auth"
    )
    assert sorted(d["kind"] for d in docs) == ["Deployment", "HorizontalPodAutoscaler", "Secret", "Service"]
    validate_all(docs)
    # No --namespace and no kubeconfig: the default namespace.
    check_wiring(docs, "resnet", "default")
    objs = by_kind(docs)
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_dry_run_plain_validates(tmp_path):
    docs = dry_run(tmp_path, "plain", "--namespace", "ml", "--image-ref", DIGEST_IMAGE, "--replicas", "2")
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service"], "no Secret without --auth, no HPA without --autoscale"
    validate_all(docs)
    check_wiring(docs, "plain", "ml")
    assert by_kind(docs)["Deployment"]["spec"]["replicas"] == 2


def test_the_validator_is_not_vacuous(tmp_path):
    """A broken copy of the manifests fails the same validation."""
    docs = dry_run(tmp_path, "resnet", "--image-ref", IMAGE, "--replicas", "2")
    dep = copy.deepcopy(by_kind(docs)["Deployment"])
    dep["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 8500  # must be a string
    with pytest.raises(AssertionError, match="not of type"):
        validate_all([dep])
    dep = copy.deepcopy(by_kind(docs)["Deployment"])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # misspelt field
    with pytest.raises(AssertionError, match="readinessprobe"):
        validate_all([dep])


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--image-ref", IMAGE, "--replicas", "2", "--autoscale", "5:2:70"), "autoscale"),
        (("--image-ref", "registry.example/ResNet", "--replicas", "1"), "image"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, args, needle):
    cp = deploy(tmp_path, "resnet", "--target", "kubernetes", *args, "--dry-run", "-o", "yaml", check=False)
    assert cp.returncode != 0, f"accepted:\n{cp.stdout}"
    assert needle in cp.stderr.lower(), cp.stderr
    assert "kind:" not in cp.stdout
