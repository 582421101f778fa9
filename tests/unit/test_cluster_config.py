"""cluster.yaml against Ray's own cluster-config schema, offline, plus what ARMoR relies on.

`ray up` (ray.autoscaler._private.commands._bootstrap_config) does, before it talks to the cloud:

    config = prepare_config(config)      # merge ray/autoscaler/<provider>/defaults.yaml, fill defaults
    provider.fillout_available_node_types_resources(config)   # AWS only: asks EC2 (skipped here)
    validate_config(config)              # jsonschema against ray/autoscaler/ray-schema.json + checks

The test runs the same two pure functions from the installed Ray, with sockets blocked so that
nothing can reach a network. The EC2 look-up is skipped; that is why cluster.yaml writes every node
type's `resources` itself (the schema requires them then), and why a test checks them against the
instance types' real vCPU and GPU counts.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml

pytest.importorskip("ray.autoscaler._private.util")
import ray
import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
SHARED = "/mnt/armor"        # the shared-storage path every node must see
PROJECT_MOUNT = "/home/ray/armor"

# vCPUs and NVIDIA GPUs per instance type (AWS's published specs). Ray would overlay the numbers in
# cluster.yaml on what EC2 reports, so a wrong number here misleads the autoscaler.
INSTANCE_SPECS = {
    "m5.xlarge": (4, 0), "m5.2xlarge": (8, 0), "m5.4xlarge": (16, 0),
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.12xlarge": (48, 4),
}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to a config before contacting the cloud; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    return ray_validate(raw)


# ---------------------------------------------------------------- Ray's own validation


def test_schema_file_is_the_installed_rays():
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    assert schema["additionalProperties"] is False      # unknown top-level keys are errors
    assert {"cluster_name", "provider"} <= set(schema["required"])


def test_cluster_yaml_passes_rays_validation(raw, no_network):
    prepared = ray_validate(raw)
    # and the raw file on its own against the bare schema, before any default is merged in
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    assert prepared["cluster_name"] == "armor"


@pytest.mark.parametrize("mutate, error", [
    (lambda c: c.update(max_worker=4), jsonschema.ValidationError),                   # unknown key
    (lambda c: c.update(max_workers="six"), jsonschema.ValidationError),              # wrong type
    (lambda c: c["available_node_types"]["gpu.encode"]["resources"].update(GPU="1"),  # GPU as text
     jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu.train"].update(gpus=1),                 # unknown node key
     jsonschema.ValidationError),
    (lambda c: c["docker"].update(run_option=["--gpus all"]), jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="no.such.type"), ValueError),
    (lambda c: c["available_node_types"]["gpu.encode"].update(min_workers=99), ValueError),
])
def test_broken_copies_fail_validation(raw, no_network, mutate, error):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(error):
        ray_validate(broken)


# ---------------------------------------------------------------- what ARMoR relies on


def node_types(config):
    return config["available_node_types"]


def worker_types(config):
    return {k: v for k, v in node_types(config).items() if k != config["head_node_type"]}


def test_head_node_type_exists_and_is_cpu_only(prepared):
    head = prepared["head_node_type"]
    assert head in node_types(prepared)
    assert node_types(prepared)[head]["resources"].get("GPU", 0) == 0
    assert node_types(prepared)[head]["max_workers"] == 0


def test_gpu_worker_types_give_ray_and_docker_the_gpu(prepared):
    gpu_types = {k: v for k, v in worker_types(prepared).items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no node type advertises GPUs in `resources`"
    for name, spec in gpu_types.items():
        assert spec["max_workers"] >= 1, name
        # automatic --runtime=nvidia is off, so each GPU type must pass --gpus itself
        options = " ".join(prepared["docker"].get("run_options", [])
                           + spec.get("docker", {}).get("worker_run_options", []))
        assert "--gpus all" in options, name
    assert prepared["docker"]["disable_automatic_runtime_detection"] is True
    assert "--gpus" not in " ".join(prepared["docker"].get("run_options", [])), \
        "--gpus in the shared run_options would also apply to the GPU-less head"


def test_declared_resources_match_the_instance_types(prepared):
    for name, spec in node_types(prepared).items():
        itype = spec["node_config"]["InstanceType"]
        assert itype in INSTANCE_SPECS, f"{name}: add {itype}'s vCPU/GPU counts to INSTANCE_SPECS"
        cpus, gpus = INSTANCE_SPECS[itype]
        assert spec["resources"]["CPU"] == cpus, name
        assert spec["resources"].get("GPU", 0) == gpus, name


def test_worker_limits_are_consistent(prepared):
    for name, spec in worker_types(prepared).items():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= prepared["max_workers"], name


def test_project_is_mounted_and_heavy_files_stay_home(raw):
    mounts = raw["file_mounts"]
    assert PROJECT_MOUNT in mounts
    local = (ROOT / mounts[PROJECT_MOUNT]).resolve()   # relative to where `ray up` runs: the root
    assert local == ROOT and (local / "pyproject.toml").is_file()
    excluded = set(raw.get("rsync_exclude", []))
    assert ".gitignore" in raw.get("rsync_filter", []) or {".venv", "runs"} <= excluded
    gitignore = (ROOT / ".gitignore").read_text()
    assert ".venv" in gitignore and "*.parquet" in gitignore


def test_docker_image_is_the_project_image(raw):
    image = raw["docker"]["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("/armor") and tag and tag != "latest", image
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tag == version, f"image tag {tag} != project version {version}"
    assert raw["docker"]["container_name"]


def test_shared_storage_is_mounted_at_the_same_path_everywhere(raw):
    assert f"-v {SHARED}:{SHARED}" in raw["docker"]["run_options"]
    init = " ".join(raw["initialization_commands"])
    assert re.search(rf"mount -t nfs4 .* {re.escape(SHARED)}\b", init), "the host never mounts it"
    assert any(SHARED in cmd and "stat -f" in cmd for cmd in raw["setup_commands"]), \
        "setup must refuse a node whose workspace is not shared"


def test_setup_installs_nothing_heavy(prepared):
    for cmd in prepared["head_setup_commands"] + prepared["worker_setup_commands"]:
        if "pip install" in cmd:
            assert "--no-deps" in cmd, cmd
        assert "apt-get" not in cmd and "conda install" not in cmd, cmd
    assert any(f"-e {PROJECT_MOUNT}" in c for c in prepared["head_setup_commands"])


def test_start_commands_start_ray(raw):
    head = raw["head_start_ray_commands"]
    worker = raw["worker_start_ray_commands"]
    assert head[0].strip() == "ray stop" and worker[0].strip() == "ray stop"
    head_start = [shlex.split(c) for c in head if "ray start" in c]
    worker_start = [shlex.split(c) for c in worker if "ray start" in c]
    assert len(head_start) == 1 and len(worker_start) == 1
    h, w = head_start[0], worker_start[0]
    assert "--head" in h and "--port=6379" in h
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in h
    assert "--dashboard-host=0.0.0.0" in h
    assert "--address=$RAY_HEAD_IP:6379" in w and "--head" not in w


def test_jobs_see_mlflow_and_the_auth_token(raw):
    head_start = next(c for c in raw["head_start_ray_commands"] if "ray start" in c)
    worker_start = next(c for c in raw["worker_start_ray_commands"] if "ray start" in c)
    # exported before `ray start`, so every worker process and job driver inherits it
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in head_start.split("ray start")[0]
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in worker_start.split("ray start")[0]
    assert any("mlflow server" in c and f"sqlite:///{SHARED}/" in c for c in raw["head_start_ray_commands"])
    # token auth: mode on in every container, the head makes the token, every node copies it
    assert "-e RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    assert any("get-auth-token --generate" in c for c in raw["head_start_ray_commands"])
    assert any(f"cp {SHARED}/.ray/auth_token ~/.ray/auth_token" in c
               for c in raw["worker_start_ray_commands"])
    text = CLUSTER_YAML.read_text()
    assert "TMDB_API_TOKEN" in text                             # documented ...
    assert not re.search(r"TMDB_API_(TOKEN|KEY)\s*[:=]\s*\S", text), \
        "a TMDB credential must never be written into cluster.yaml"   # ... but never set here


def test_every_shell_command_parses(raw):
    keys = ["initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]
    for key in keys:
        for cmd in raw.get(key, []):
            result = subprocess.run(["bash", "-n", "-c", cmd], check=False, capture_output=True, text=True)
            assert result.returncode == 0, f"{key}: {cmd!r}: {result.stderr}"
