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


def resolve_backend(model_path: str, backend: str, use_gpu: bool = False, packing: str = "off") -> tuple[str, dict]:
    """(engine name, its extra options) for a `--backend` value: "auto" on CPU is the fastest file `nlpbatch export`
    wrote (OpenVINO static int8 when OpenVINO is installed, else ONNX Runtime int8, else fp32), else torch; a GPU or
    packing always runs torch."""
    torch = ("torch", {"use_gpu": use_gpu, "packing": packing})
    if use_gpu or packing == "on" or backend == "torch":
        return torch
    if backend in ("auto", "openvino-int8"):
        path = openvino_file(model_path, required=backend != "auto")
        if path is not None:
            return "openvino", {"path": path}
    path = onnx_file(model_path, backend)
    return torch if path is None else ("onnx", {"path": Path(path)})


def engine_name(model_path: str, backend: str = "auto", use_gpu: bool = False, packing: str = "off") -> str:
    """What `load_engine` runs for these arguments ("openvino-int8", "onnx-int8", "onnx-fp32", "torch"): the
    manifest records it, since `auto` depends on the files beside the model."""
    name, options = resolve_backend(model_path, backend, use_gpu, packing)
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
    name, options = resolve_backend(model_path, backend, use_gpu, packing)
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(task, model_path, threads=threads, reduce=reduce, **options)


__all__ = [
    "BACKENDS",
    "ENGINES",
    "ONNX_DIR",
    "ONNX_FILES",
    "Engine",
    "export_onnx",
    "load_engine",
    "onnx_file",
    "openvino_file",
]
