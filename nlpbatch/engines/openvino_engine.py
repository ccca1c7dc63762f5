"""The OpenVINO engine (CPU) and the export that writes its file:

MODEL/openvino/model.int8.xml (+ .bin)   static int8: NNCF post-training quantization of the traced fp32 graph,
                                         calibrated on a few hundred examples of the model's training data

Static int8 (activation scales fixed at export) lets OpenVINO run the whole encoder in int8 kernels; on CPU it ran
the model step 1.2-1.4x faster than ONNX Runtime's dynamic int8, at a CoNLL F1 closer to torch's
(benchmarks/cpu_engines.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import numpy as np

OPENVINO_DIR = "openvino"
OPENVINO_FILE = "model.int8.xml"
CALIBRATION_EXAMPLES = 300


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_file(model_path: str, required: bool = False) -> Path | None:
    """MODEL/openvino/model.int8.xml when it exists and OpenVINO is installed; `required`: else an error saying why."""
    path = Path(model_path) / OPENVINO_DIR / OPENVINO_FILE
    if path.is_file() and available():
        return path
    if required:
        if not available():
            raise FileNotFoundError("--backend openvino-int8: OpenVINO is not installed; pip install openvino nncf")
        raise FileNotFoundError(f"{path}: not there; run `nlpbatch export --model {model_path}`")
    return None


class OpenVinoEngine:
    packs = False

    def __init__(self, task: str, model_path: str, path: Path, threads: int | None = None, reduce: bool = False):
        import openvino as ov
        from transformers import AutoConfig

        from nlpbatch.tasks import get_task

        # No pinning: OpenVINO pins a one-thread engine to the first core of the process, so the engines of the local
        # runner's threads (or of two Ray actors) all ran on one core (2 threads: 1.1x one, not 2x; measured).
        settings = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(path), "CPU", settings)
        self.request = compiled.create_infer_request()
        self.inputs = {i.get_any_name() for i in compiled.inputs}
        self.task = get_task(task)
        self.outputs = list(self.task.head_outputs)
        self.ports = [compiled.output(name) for name in self.outputs]
        self.reduce = reduce
        self.config = AutoConfig.from_pretrained(model_path)
        self.name = "openvino-int8"

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> list[np.ndarray]:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        result = self.request.infer({k: v for k, v in feed.items() if k in self.inputs})
        out = [result[port] for port in self.ports]  # copies: the request's buffers are reused by the next call
        return self.task.reduce_numpy(out) if self.reduce else out


def export_openvino(onnx_path: Path, folder: Path, calibration: list[dict[str, np.ndarray]]) -> str:
    """Quantize the traced fp32 ONNX graph to static int8 with NNCF on `calibration` (model input dicts, one example
    each) and write folder/model.int8.xml. NNCF's progress bars go to stderr: stdout is the CLI's JSON."""
    import nncf
    import openvino as ov

    folder.mkdir(exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    names = {i.get_any_name() for i in model.inputs}
    dataset = nncf.Dataset([{k: v for k, v in feed.items() if k in names} for feed in calibration])
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    path = folder / OPENVINO_FILE
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return str(path)
