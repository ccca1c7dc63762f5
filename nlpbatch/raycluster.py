"""Joining or starting the Ray cluster every command runs on."""

from __future__ import annotations

import os
import re
import sys

# Lines Ray's own actors log on every run that tell a user nothing (Ray Train's and Ray Data's internal actors are
# created with arguments in the object store; ray-project/ray#53727): kept in the session's logs, not printed
RAY_NOISE = re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store")
# Ray Train's controller logs a whole traceback when the autoscaling coordinator answers a resource request late
# (5 s) on a loaded machine, "safe to ignore" in its own words: the warning and its traceback are left out
RAY_TRANSIENT = re.compile(r"Failed to (send|cancel) resource request for ")
TRACEBACK_LINE = re.compile(r"^(Traceback \(most recent call|\s|During handling of the above|The above exception|$)")


def quiet_lines(lines: list[str]) -> list[str]:
    """Worker log lines without RAY_NOISE lines and without RAY_TRANSIENT warnings with their tracebacks."""
    kept: list[str] = []
    in_warning = False
    for line in lines:
        if RAY_TRANSIENT.search(line):
            in_warning = True
        elif in_warning and not TRACEBACK_LINE.match(line):
            # the exception's own line ends a traceback, unless a chained one follows (caught on the next line)
            in_warning = bool(re.match(r"^[\w.]+(Error|Exception|Timeout)\b", line))
            if in_warning:
                continue
        if not in_warning and not RAY_NOISE.search(line):
            kept.append(line)
    return kept


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
    if not sys.stderr.isatty() or os.environ.get("NO_COLOR"):
        # workers' lines reach a log file or a cron mail: no ANSI colour codes around their "(pid=...)" prefix
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # a local cluster's workers: quiet too (transformers' save bars), unless --verbose
    env = {} if verbose else {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if os.environ.get("RAY_ADDRESS"):
        # a joined cluster (`ray job submit`) keeps the job's own runtime_env: no env vars of ours on top
        context = ray.init(log_to_driver=True, logging_level=level)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # address="local": a new local cluster even when another Ray runs on this machine (`ray start`, a test)
        cpus = max(os.cpu_count() or 1, logical_cpus_needed)
        # Its workers are told its address: Ray Train's controller looks a cluster up by address, and with another
        # Ray on the machine an unnamed lookup fails ("Found multiple active Ray instances") in a logged traceback.
        given = os.environ.get("RAY_GCS_SERVER_PORT")
        port = given or str(_free_port())
        env["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
        os.environ["RAY_GCS_SERVER_PORT"] = port  # read once, by the GCS this init starts
        try:
            context = ray.init(
                address="local",
                num_cpus=cpus,
                log_to_driver=True,
                logging_level=level,
                runtime_env={"env_vars": env},
            )
        finally:
            if given is None:
                del os.environ["RAY_GCS_SERVER_PORT"]
    if not verbose:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from nlpbatch.progress import say

        say(f"Ray logs: {context.address_info.get('session_dir', '?')}/logs (--verbose prints them here)")
        _drop_noise_from_worker_logs()
    from nlpbatch.errors import handle_sigterm

    handle_sigterm()  # ours again: Ray's core worker replaced it with a stack-dumping one


def _drop_noise_from_worker_logs() -> None:
    """Wrap the handler that prints the workers' log lines here so `quiet_lines` leaves Ray's noise out (Ray's own API
    for it is private: with another Ray layout nothing is filtered)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    for name, handler in list(dispatcher.handlers):
        if name != "ray_print_logs":
            continue

        def printed(data: dict, handler=handler) -> None:
            lines = quiet_lines(data.get("lines", []))
            if lines:
                handler({**data, "lines": lines})

        dispatcher.remove_handler(name)
        dispatcher.add_handler(name, printed)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]
