"""infra/kuberay: the RayCluster and RayJob an operator applies, checked against the rules KubeRay
enforces (ray.io/v1 CRDs and its validation) and against what sweeper needs to run a sweep."""

from __future__ import annotations

import re
import shlex

import pytest

from .conftest import REPO, find_literal_secrets, load_yaml, profile_hardware, profile_variables

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


@pytest.fixture(scope="module")
def cluster() -> dict:
    (doc,) = load_yaml("infra/kuberay/raycluster.yaml")
    return doc


@pytest.fixture(scope="module")
def job() -> dict:
    (doc,) = load_yaml("infra/kuberay/rayjob.yaml")
    return doc


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_kinds_and_names(cluster: dict, job: dict) -> None:
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    # KubeRay: DNS-1035 labels, at most 53 characters for a cluster and 47 for a job.
    assert DNS_1035.match(cluster["metadata"]["name"]) and len(cluster["metadata"]["name"]) <= 53
    assert DNS_1035.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 47


def test_the_job_runs_the_same_cluster_as_the_standing_one(cluster: dict, job: dict) -> None:
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


def test_ray_version_matches_image_and_launcher(cluster: dict) -> None:
    version = cluster["spec"]["rayVersion"]
    # Token auth (authOptions) needs Ray >= 2.52.
    assert tuple(int(p) for p in version.split(".")) >= (2, 52, 0)
    dockerfile = (REPO / "infra/kuberay/Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(version)}-", dockerfile, re.M)
    assert f'"ray[default,tune]=={version}"' in dockerfile
    (launcher,) = load_yaml("infra/cluster/aws-gpu.yaml")
    assert launcher["docker"]["image"].startswith(f"rayproject/ray:{version}-")


def test_token_auth_and_autoscaling(cluster: dict) -> None:
    spec = cluster["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert options["version"] in {"v1", "v2"}
    assert options["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
    assert options["idleTimeoutSeconds"] >= 0
    # Autoscaler v2 requires the pods' restartPolicy to be Never or unset.
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert group["template"]["spec"].get("restartPolicy", "Never") == "Never"


def test_the_head_takes_no_trials(cluster: dict) -> None:
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["num-gpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert 8265 in {p["containerPort"] for p in container["ports"]}  # the Jobs API


def test_gpu_workers_fit_the_cluster_profile(cluster: dict) -> None:
    hardware = profile_hardware()
    groups = cluster["spec"]["workerGroupSpecs"]
    assert sum(g["maxReplicas"] for g in groups) >= hardware["nodes"]
    for group in groups:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        # KubeRay refuses resources given both here and in rayStartParams.
        assert not {"num-cpus", "num-gpus", "memory", "resources"} & set(group["rayStartParams"])
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
        assert resources["limits"]["nvidia.com/gpu"] == hardware["devices_per_node"]
        # Enough CPUs for the densest packing the planner allows on one node.
        densest = hardware["devices_per_node"] * hardware["max_trials_per_device"] * hardware["cpus_per_trial"]
        assert int(resources["limits"]["cpu"]) >= densest
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        shm = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"}
        assert any(v["name"] in shm and v["emptyDir"].get("medium") == "Memory" for v in pod["volumes"])


def test_containers_are_sized_and_pinned(cluster: dict) -> None:
    images = set()
    for container in containers(cluster["spec"]):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]
        images.add(container["image"])
    (image,) = images
    assert ":" in image and not image.endswith(":latest")


def test_settings_come_from_references_and_match_the_profile(cluster: dict) -> None:
    envs = [c["env"] for c in containers(cluster["spec"])]
    assert all(env == envs[0] for env in envs), "the head and the workers need the same settings"
    env = {e["name"]: e for e in envs[0]}
    # Ray sets RAY_ADDRESS for a job's driver; every other variable the profile reads is provided.
    assert profile_variables() - {"RAY_ADDRESS"} <= set(env)
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env)
    for name, entry in env.items():
        if SECRET_NAME.search(name) or name.startswith("MLFLOW_TRACKING_"):
            assert "value" not in entry, name
            reference = entry["valueFrom"].get("secretKeyRef") or entry["valueFrom"].get("configMapKeyRef")
            assert reference and reference["key"] == name
        if SECRET_NAME.search(name) or name == "MLFLOW_TRACKING_USERNAME":
            assert "secretKeyRef" in entry["valueFrom"], name


@pytest.mark.parametrize("path", ["infra/kuberay/raycluster.yaml", "infra/kuberay/rayjob.yaml",
                                  "infra/kuberay/Dockerfile"])
def test_no_secret_lives_in_the_manifests(path: str) -> None:
    assert find_literal_secrets((REPO / path).read_text()) == []
    if path.endswith(".yaml"):
        assert all(doc["kind"] not in {"Secret", "ConfigMap"} for doc in load_yaml(path))


def test_the_job_runs_a_sweep_and_cleans_up(job: dict) -> None:
    spec = job["spec"]
    # KubeRay splices the entrypoint unquoted into the submitter pod's shell command: an operator
    # there would run the rest of the line in the submitter instead of in the job.
    assert not re.search(r"[;&|<>`$(){}]", spec["entrypoint"])
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["sweeper", "run"]
    spec_file, backend = words[2], words[words.index("--backend") + 1]
    assert (REPO / spec_file).is_file() and (REPO / backend).is_file()
    # The driver starts where `ray start` ran, the image's WORKDIR: the relative paths must be there.
    dockerfile = (REPO / "infra/kuberay/Dockerfile").read_text()
    assert re.search(r"^WORKDIR /home/ray/sweeper$", dockerfile, re.M)
    for folder in (spec_file.split("/")[0], backend.split("/")[0]):
        assert re.search(rf"^COPY .* {folder} \./{folder}$", dockerfile, re.M)
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "SidecarMode"}
    # KubeRay: a TTL needs shutdownAfterJobFinishes; deadlines are positive.
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] >= 0
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0
    assert "clusterSelector" not in spec and "deletionStrategy" not in spec
