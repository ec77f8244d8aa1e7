"""infra/cluster: the Ray cluster launcher config (`ray up`) and the environment file it carries to
every node, checked against Ray's own schema and against what sweeper needs."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest

from .conftest import REPO, find_literal_secrets, load_yaml, profile_hardware

CONFIG = "infra/cluster/aws-gpu.yaml"
WRITE_ENV = REPO / "infra" / "cluster" / "write-env.sh"


@pytest.fixture(scope="module")
def config() -> dict:
    (doc,) = load_yaml(CONFIG)
    return doc


def ray_schema() -> dict:
    # The schema `ray up` validates against, from the installed wheel (found without importing ray).
    (folder,) = importlib.util.find_spec("ray").submodule_search_locations
    return json.loads((Path(folder) / "autoscaler" / "ray-schema.json").read_text())


def test_valid_for_ray_up(config: dict) -> None:
    jsonschema.validate(config, ray_schema())
    # What `ray up` checks next, after filling in the provider's defaults, before any cloud call.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_the_head_takes_no_trials(config: dict) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    # These resources reach `ray start` (RAY_OVERRIDE_RESOURCES) as well as the autoscaler.
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--num-gpus=0" in start


def test_gpu_workers_fit_the_cluster_profile(config: dict) -> None:
    hardware = profile_hardware()
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers
    assert config["max_workers"] == sum(t["max_workers"] for t in workers.values()) >= hardware["nodes"]
    densest = hardware["devices_per_node"] * hardware["max_trials_per_device"] * hardware["cpus_per_trial"]
    for node_type in workers.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
        assert node_type["resources"]["GPU"] == hardware["devices_per_node"]
        assert node_type["resources"]["CPU"] >= densest


def test_every_node_installs_sweeper_and_torch(config: dict) -> None:
    assert config["file_mounts"]["~/sweeper"] == "."
    setup = "\n".join(config["setup_commands"])
    assert re.search(r"pip install .*~/sweeper", setup)
    assert re.search(r'pip install .*"torch==[\d.]+"', setup)
    # Installing sweeper must not move Ray off the image's version.
    version = config["docker"]["image"].split(":")[1].split("-")[0]
    assert f'"ray[default,tune]=={version}"' in setup


def test_every_ray_start_loads_the_environment_and_token_auth(config: dict) -> None:
    assert config["file_mounts"]["~/.sweeper/cluster.env"] == "~/.sweeper/cluster.env"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        (start,) = [c for c in commands if "ray start" in c]
        assert start.startswith(". ~/.sweeper/cluster.env && export RAY_AUTH_MODE=token")


def test_no_secret_lives_in_the_config() -> None:
    text = (REPO / CONFIG).read_text()
    assert find_literal_secrets(text) == []
    assert "ssh_private_key" not in text and "aws_secret_access_key" not in text.lower()


# --- write-env.sh -------------------------------------------------------------------------------

REQUIRED = {"MLFLOW_TRACKING_URI": "https://mlflow.example.org", "MLFLOW_TRACKING_USERNAME": "sweeper",
            "MLFLOW_TRACKING_PASSWORD": "a 'quoted' $pass\"word\nwith a newline",
            "SWEEPER_STORAGE": "s3://bucket/sweeps"}


def write_env(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(WRITE_ENV)], env=base | env, capture_output=True, text=True, timeout=30)


def test_write_env_round_trips_values_into_a_private_file(tmp_path: Path) -> None:
    extra = {"SWEEPER_S3_ENDPOINT": "http://seaweed:8333", "GITHUB_TOKEN": "not-for-the-cluster"}
    result = write_env(tmp_path, REQUIRED | extra)
    assert result.returncode == 0, result.stderr
    written = tmp_path / ".sweeper" / "cluster.env"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    # Sourced by bash, as `ray start` does on the nodes, it gives back exactly what was set.
    names = [*REQUIRED, "SWEEPER_S3_ENDPOINT", "GITHUB_TOKEN"]
    script = f". {written} && " + " && ".join(f'printf "%s\\0" "${{{n}:-}}"' for n in names)
    values = subprocess.run(["bash", "-c", script], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
    assert dict(zip(names, values)) == REQUIRED | {"SWEEPER_S3_ENDPOINT": "http://seaweed:8333", "GITHUB_TOKEN": ""}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_write_env_refuses_to_leave_out_a_required_variable(tmp_path: Path, name: str) -> None:
    result = write_env(tmp_path, {k: v for k, v in REQUIRED.items() if k != name})
    assert result.returncode == 2
    assert name in result.stderr
    assert not (tmp_path / ".sweeper" / "cluster.env").exists()
