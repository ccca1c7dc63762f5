"""`--backend auto` on a CPU: when `nlpbatch export` wrote more than one int8 engine (OpenVINO static int8, ONNX
Runtime dynamic int8), which one is fastest depends on the machine: OpenVINO ran 1.2-1.4x faster than ONNX Runtime on
an AVX-512 VNNI EPYC and 1.66x slower on an AVX2-only one (benchmarks/README.md). So the choice is measured where
the engine starts: each candidate annotates the same windows of the model's own shape (random token ids: the
kernels' speed does not depend on the values), the fastest is kept, and the choice is cached per CPU signature (the
model's files, the CPU model, its instruction sets, the engine's thread count) beside the model, or in the user's
cache when the model folder is read-only, so later runs on that kind of machine skip the probe. `--backend` names
one engine to skip the measurement.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import time
from pathlib import Path

import numpy as np

PROBE_WINDOWS, PROBE_TOKENS, PROBE_CALLS = 8, 128, 3  # about a second per engine for MiniLM on one core
CACHE_FILE = ".nlpbatch-engine-choice.json"
AGREEMENT_FILE = "agreement.json"  # in MODEL/onnx/: what `export` measured of each int8 engine against torch
# An int8 engine whose predictions (each head output's argmax) equal torch fp32's on fewer of the export's
# calibration windows' positions than this is not raced by `auto` (the README quick start's model, 300 windows:
# onnx-int8 99.4%, openvino-int8 99.7% of 6,462 positions)
MIN_AGREEMENT = 0.98
ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp", "sve")


@functools.cache
def cpu_signature() -> dict:
    """The CPU model and the instruction sets int8 kernels dispatch on (Linux: /proc/cpuinfo)."""
    cpu, flags = "", set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        lines = info.read_text().splitlines()
        cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith(("model name", "CPU part"))), "")
        flags = set(next((x.split(":", 1)[1].split() for x in lines if x.startswith(("flags", "Features"))), []))
    return {"cpu": cpu, "isa": sorted(flags & set(ISA))}


def _key(candidates: dict[str, dict], threads: int | None) -> str:
    files = sorted(
        (str(o["path"]), os.path.getsize(o["path"]), int(os.path.getmtime(o["path"]))) for o in candidates.values()
    )
    blob = json.dumps({"files": files, "threads": threads, **cpu_signature()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _caches(model_path: str) -> list[Path]:
    from nlpbatch.storage import user_cache

    user = user_cache("engine-choice.json")
    return [Path(model_path) / CACHE_FILE, user]


def _read(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _remember(model_path: str, key: str, record: dict) -> None:
    for path in _caches(model_path):  # beside the model, else (read-only) the user's cache
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            known = _read(path)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**known, key: record}, indent=2))
            os.replace(tmp, path)
            return
        except OSError:
            continue


def tokens_per_second(engine, vocab_size: int) -> float:
    """An engine's speed on PROBE_WINDOWS windows of PROBE_TOKENS random tokens (after one warm-up call)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, max(1001, vocab_size), (PROBE_WINDOWS, PROBE_TOKENS), dtype=np.int64)
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    engine(ids, mask, types)
    start = time.perf_counter()
    for _ in range(PROBE_CALLS):
        engine(ids, mask, types)
    return PROBE_WINDOWS * PROBE_TOKENS * PROBE_CALLS / (time.perf_counter() - start)


_CHOSEN: dict[str, tuple[str, str]] = {}  # per process: one probe, whatever number of engines it then loads


def fastest(task: str, model_path: str, candidates: dict[str, tuple[str, dict]], threads: int | None) -> tuple:
    """(backend name, reason) of the fastest of `candidates` ({backend: (engine, options)}) on this CPU: cached,
    or measured now."""
    from nlpbatch.engines import ENGINES

    key = _key({b: o for b, (_, o) in candidates.items()}, threads)
    if key in _CHOSEN:
        return _CHOSEN[key]
    for path in _caches(model_path):
        record = _read(path).get(key)
        if isinstance(record, dict) and record.get("backend") in candidates:
            _CHOSEN[key] = (record["backend"], f"{record['reason']} (cached in {path})")
            return _CHOSEN[key]
    speeds, failed = {}, {}
    for backend, (engine_name, options) in candidates.items():
        module, cls = ENGINES[engine_name].split(":")
        try:  # an engine that cannot run its file on this CPU is out of the race, said in the reason
            engine = getattr(importlib.import_module(module), cls)(task, model_path, threads=threads, **options)
            speeds[backend] = tokens_per_second(engine, getattr(engine.config, "vocab_size", 30522))
        except Exception as err:
            failed[backend] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err) else ''}"
            continue
        finally:
            engine = None
    if not speeds:
        raise RuntimeError(f"{model_path}: no int8 engine runs on this CPU: {failed}")
    best = max(speeds, key=speeds.get)
    others = ", ".join(f"{b} {s:,.0f}" for b, s in sorted(speeds.items(), key=lambda kv: -kv[1]) if b != best)
    broken = "".join(f"; {b} failed to load ({why})" for b, why in failed.items())
    signature = cpu_signature()
    isa = ", ".join(signature["isa"]) or "no listed ISA"
    where = f"{signature['cpu'] or 'this CPU'} ({isa}, {threads or 'all'} threads)"
    reason = (
        f"measured: {best} {speeds[best]:,.0f}" + (f" vs {others}" if others else "") + f" tokens/s on {where}{broken}"
    )
    if not failed:  # a load failure may be passing (memory): measure again next time
        _remember(model_path, key, {"backend": best, "reason": reason, "tokens_per_second": speeds})
    _CHOSEN[key] = (best, reason)
    return _CHOSEN[key]


def measure_agreement(task: str, model_path: str, windows: list[dict], written: dict[str, str]) -> dict:
    """{backend: {"agreement", "positions", "windows"}}: the share of positions where each int8 engine's prediction
    (the argmax of every head output) equals torch fp32's, over `windows` (model inputs, one example each). Written
    to MODEL/onnx/agreement.json by `export`, read by `auto`."""
    from nlpbatch.engines import load_engine

    def predictions(engine) -> list[np.ndarray]:
        found = []
        for w in windows:
            ids = w["input_ids"]
            types = w.get("token_type_ids", np.zeros_like(ids))
            found += [np.argmax(out, axis=-1).ravel() for out in engine(ids, w["attention_mask"], types)]
        return found

    reference = predictions(load_engine(task, model_path, backend="torch"))
    positions = sum(len(r) for r in reference)
    measured = {}
    for backend, kind in (("onnx-int8", "int8"), ("openvino-int8", "openvino-int8")):
        if kind not in written:
            continue
        equal = sum(int((a == b).sum()) for a, b in zip(reference, predictions(load_engine(task, model_path, backend))))
        measured[backend] = {"agreement": round(equal / positions, 5), "positions": positions, "windows": len(windows)}
    return measured


def recorded_agreement(model_path: str) -> dict:
    """What `export` measured (`measure_agreement`), {} when it measured nothing (no calibration data at hand)."""
    from nlpbatch.engines.onnx_engine import ONNX_DIR

    return _read(Path(model_path) / ONNX_DIR / AGREEMENT_FILE)


def too_far_from_torch(model_path: str, candidates: dict) -> dict[str, str]:
    """{backend: why} of the `candidates` whose recorded agreement with torch is under MIN_AGREEMENT."""
    recorded = recorded_agreement(model_path)
    out = {}
    for backend in candidates:
        share = recorded.get(backend, {}).get("agreement")
        if isinstance(share, (int, float)) and share < MIN_AGREEMENT:
            out[backend] = f"{backend} left out: agrees with torch on {share:.1%} of positions (< {MIN_AGREEMENT:.0%})"
    return out
