"""Joining or starting the Ray cluster every command runs on."""

from __future__ import annotations

import os


def ensure_ray(logical_cpus_needed: int = 1) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local one.

    A local cluster gets at least as many logical CPUs as the job needs: they are scheduling tokens, and a
    2-core laptop can still run 2 workers.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # address="local": a new local cluster even when another Ray runs on this machine (`ray start`, a test)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, logical_cpus_needed), log_to_driver=True)
