"""Start and stop a separate local Ray head without touching the test session's Ray: `ray stop` would end every
Ray on the machine, so a head is stopped by ending the process trees that carry its temp dir or GCS port."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_ports() -> list[str]:
    """Own agent/metrics ports: another Ray on this machine (the test session's) holds the defaults."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def stop_head(*markers: str) -> None:
    """End every process whose command line holds one of `markers`, with all their descendants (Ray renames its
    agents and workers, so the tree is collected before anything is ended)."""
    import importlib

    importlib.import_module("ray")  # puts Ray's bundled psutil on sys.path
    psutil = importlib.import_module("psutil")

    roots = [
        p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or []) for m in markers)
    ]
    procs = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for proc in alive:
        proc.kill()
