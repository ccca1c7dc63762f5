"""Joining or starting the Ray cluster every command runs on."""

from __future__ import annotations

import os


def ensure_ray(logical_cpus_needed: int = 1) -> None:
    """Join the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local one.

    A local cluster gets at least as many logical CPUs as the job needs: they are scheduling tokens, and a
    2-core laptop can still run 2 workers. Quiet unless NLPBATCH_VERBOSE=1 (`--verbose`): Ray's own INFO lines and
    warnings stay in its session logs (the folder is named once), and a local cluster this command starts runs
    without token authentication (nothing but this process connects to it).
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    verbose = os.environ.get("NLPBATCH_VERBOSE") == "1"
    level = logging.INFO if verbose else logging.ERROR
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(log_to_driver=True, logging_level=level)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local": a new local cluster even when another Ray runs on this machine (`ray start`, a test)
        cpus = max(os.cpu_count() or 1, logical_cpus_needed)
        context = ray.init(address="local", num_cpus=cpus, log_to_driver=True, logging_level=level)
    if not verbose:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from nlpbatch.progress import say

        say(f"Ray logs: {context.address_info.get('session_dir', '?')}/logs (--verbose prints them here)")
    from nlpbatch.errors import handle_sigterm

    handle_sigterm()  # ours again: Ray's core worker replaced it with a stack-dumping one
