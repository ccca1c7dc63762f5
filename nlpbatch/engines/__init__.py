"""Inference engines, each one module behind one small interface (`Engine`), registered by name in `ENGINES`:

torch     PyTorch on CPU or GPU (bf16 on GPU), padded batches or packed varlen sequences (torch_engine.py)
onnx      ONNX Runtime on CPU, the fp32 or int8 files `nlpbatch export` writes            (onnx_engine.py)
openvino  OpenVINO on CPU, the static int8 file `nlpbatch export` writes when it can      (openvino_engine.py)

An engine takes padded int64 arrays (ids, attention mask, token types) and returns the head's outputs as numpy
arrays, in the order of `Task.head_outputs`; with `reduce=True` it applies the task's reduction where the outputs
are (`Task.reduce_torch` on the device, `Task.reduce_numpy` on the host). The task, never the engine, knows what the
outputs mean, so the predictors, `evaluate` and the benchmarks do not care which engine runs.

Adding an engine: a module with a class whose constructor takes (task name, model dir, options) and that has the
attributes and methods of `Engine`; add its line to `ENGINES` and, if it is chosen by a backend name, to
`resolve_backend`, the one place where `--backend auto` is decided.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nlpbatch.engines.onnx_engine import ONNX_DIR, ONNX_FILES, export_onnx, onnx_backend_name, onnx_file
from nlpbatch.engines.openvino_engine import openvino_file

BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8", "openvino-int8")
ENGINES = {
    "torch": "nlpbatch.engines.torch_engine:TorchEngine",
    "onnx": "nlpbatch.engines.onnx_engine:OnnxEngine",
    "openvino": "nlpbatch.engines.openvino_engine:OpenVinoEngine",
}


class Engine(Protocol):
    name: str  # what ran, for manifests and benchmarks ("torch-packed", "onnx-int8")
    outputs: list[str]  # the head's output names, in order
    config: Any  # the model's transformers config (id2label, ...)
    packs: bool  # True: call `packed(tokens, types, cu_seqlens)` on padding-free sequences instead

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> list[np.ndarray]: ...


def int8_engines(model_path: str) -> dict[str, tuple[str, dict]]:
    """The int8 engines `nlpbatch export` wrote for a model: {backend name: (engine, its options)}."""
    found = {}
    path = openvino_file(model_path)
    if path is not None:
        found["openvino-int8"] = ("openvino", {"path": path})
    path = Path(model_path) / ONNX_DIR / ONNX_FILES["int8"]
    if path.is_file():
        found["onnx-int8"] = ("onnx", {"path": path})
    return found


def auto_choice(model_path: str, task: str | None = None, threads: int | None = None) -> tuple[str | None, str]:
    """(backend, why) of `--backend auto` on a CPU: the one int8 engine exported, or, with several and the task
    known, the one measured fastest on this CPU (`choice.fastest`: cached per CPU signature); None without int8."""
    from nlpbatch.engines.choice import fastest, too_far_from_torch

    candidates = int8_engines(model_path)
    if not candidates:
        return None, "no int8 file exported"
    left_out = too_far_from_torch(model_path, candidates)
    candidates = {b: c for b, c in candidates.items() if b not in left_out}
    if not candidates:
        return None, "; ".join(left_out.values())
    if len(candidates) == 1 or task is None:
        backend = next(iter(candidates))
        why = "the only int8 engine exported" if len(candidates) == 1 else "the first int8 engine exported"
        return backend, "; ".join([why, *left_out.values()])
    backend, why = fastest(task, model_path, candidates, threads)
    return backend, "; ".join([why, *left_out.values()])


def resolve_backend(
    model_path: str,
    backend: str,
    use_gpu: bool = False,
    packing: str = "off",
    task: str | None = None,
    threads: int | None = None,
) -> tuple[str, dict]:
    """(engine name, its extra options) for a `--backend` value: "auto" on CPU is the int8 engine `nlpbatch export`
    wrote that measures fastest on this CPU (`auto_choice`), else ONNX fp32, else torch; a GPU or packing always
    runs torch."""
    torch = ("torch", {"use_gpu": use_gpu, "packing": packing})
    if use_gpu or packing == "on" or backend == "torch":
        return torch
    if backend == "auto":
        chosen, _ = auto_choice(model_path, task, threads)
        if chosen is not None:
            return int8_engines(model_path)[chosen]
        fp32 = Path(model_path) / ONNX_DIR / ONNX_FILES["fp32"]  # no int8 engine (or none close enough to torch)
        return ("onnx", {"path": fp32}) if fp32.is_file() else torch
    if backend == "openvino-int8":
        return "openvino", {"path": openvino_file(model_path, required=True)}
    path = onnx_file(model_path, backend)
    return torch if path is None else ("onnx", {"path": Path(path)})


def engine_name(
    model_path: str,
    backend: str = "auto",
    use_gpu: bool = False,
    packing: str = "off",
    task: str | None = None,
    threads: int | None = None,
) -> str:
    """What `load_engine` runs for these arguments ("openvino-int8", "onnx-int8", "onnx-fp32", "torch"): the
    manifest records it, since `auto` depends on the files beside the model and on the CPU."""
    name, options = resolve_backend(model_path, backend, use_gpu, packing, task, threads)
    if name == "onnx":
        return onnx_backend_name(options["path"])
    return "openvino-int8" if name == "openvino" else "torch"


def load_engine(
    task: str,
    model_path: str,
    backend: str = "auto",
    use_gpu: bool = False,
    threads: int | None = None,
    packing: str = "off",
    reduce: bool = False,
) -> Engine:
    """The engine a backend name asks for, loaded once (an actor's __init__)."""
    name, options = resolve_backend(model_path, backend, use_gpu, packing, task, threads)
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(task, model_path, threads=threads, reduce=reduce, **options)


__all__ = [
    "BACKENDS",
    "ENGINES",
    "ONNX_DIR",
    "ONNX_FILES",
    "Engine",
    "auto_choice",
    "export_onnx",
    "load_engine",
    "onnx_file",
    "openvino_file",
]
