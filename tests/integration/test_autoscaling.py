"""Autoscaling for real: Ray's own autoscaler with fake worker nodes (the local stand-in for cluster.yaml's cloud
nodes) adds a worker node when the inference actor pool does not fit on the head, and removes it once idle."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .ray_procs import agent_ports, free_port, stop_head

pytestmark = pytest.mark.integration
JOB = Path(__file__).with_name("autoscale_job.py")


def _autoscaler_config(gcs_address: str) -> dict:
    return {
        "cluster_name": "nlpbatch-fake",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def test_actor_pool_scales_worker_nodes_up_and_down(tiny_ner_model, tmp_path):
    n = 300
    pq.write_table(
        pa.table({"id": [f"a{i}" for i in range(n)], "text": [f"Angela Merkel in Paris, {i}." for i in range(n)]}),
        tmp_path / "in.parquet",
    )
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayas", dir="/tmp")  # short: unix socket paths must stay < 108 chars
    config = Path(temp_dir) / "autoscaler.json"
    config.write_text(json.dumps(_autoscaler_config(f"127.0.0.1:{port}")))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).parent / "ray")
    try:
        start = subprocess.run(
            [
                ray,
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                f"--autoscaling-config={config}",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=false",
                *agent_ports(),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        job = subprocess.run(
            [
                sys.executable,
                str(JOB),
                f"127.0.0.1:{port}",
                str(tiny_ner_model),
                str(tmp_path / "in.parquet"),
                str(tmp_path / "out"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    finally:
        stop_head(temp_dir, f"127.0.0.1:{port}")
        shutil.rmtree(temp_dir, ignore_errors=True)
    result = json.loads(next(line for line in job.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["peak_nodes"] >= 2, "the actor pool (2 x 1 CPU) does not fit the 1-CPU head: a worker node joins"
    assert result["final_nodes"] == 1, "the idle worker node is removed after the run"
    manifest = json.loads((tmp_path / "out" / "_SUCCESS.json").read_text())
    rows = [r for f in manifest["output_files"] for r in pq.read_table(tmp_path / "out" / f).to_pylist()]
    assert manifest["run_id"] == result["run_id"] and sorted(r["id"] for r in rows) == sorted(f"a{i}" for i in range(n))
