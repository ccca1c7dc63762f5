"""The ONNX Runtime engine (CPU) and the export that writes its files:

MODEL/onnx/model.onnx        fp32, graph-optimised for BERT-like encoders (attention, LayerNorm, GELU fused)
MODEL/onnx/model.int8.onnx   dynamic int8 quantization of the MatMuls and the fused attention (QAttention), per
                             channel, reduced range (no VNNI needed)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ONNX_DIR = "onnx"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def onnx_file(model_path: str, backend: str) -> Path | None:
    """The ONNX file a backend name selects (auto: int8 if exported, else fp32), or None for torch / not exported."""
    folder = Path(model_path) / ONNX_DIR
    if backend == "torch":
        return None
    kinds = {"onnx-fp32": ["fp32"], "onnx-int8": ["int8"]}.get(backend, ["int8", "fp32"])
    for kind in kinds:
        if (folder / ONNX_FILES[kind]).is_file():
            return folder / ONNX_FILES[kind]
    if backend != "auto":
        raise FileNotFoundError(
            f"{folder}: no {' or '.join(ONNX_FILES[k] for k in kinds)}; run `nlpbatch export --model {model_path}`"
            + (" --quantize int8" if kinds == ["int8"] else "")
        )
    return None


def onnx_backend_name(path: Path) -> str:
    """The backend name of an exported ONNX file ("onnx-int8" or "onnx-fp32"), as engines and manifests say it."""
    return "onnx-int8" if path.name == ONNX_FILES["int8"] else "onnx-fp32"


class OnnxEngine:
    packs = False

    def __init__(self, task: str, model_path: str, path: Path, threads: int | None = None, reduce: bool = False):
        import onnxruntime as ort
        from transformers import AutoConfig

        from nlpbatch.tasks import get_task

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.task = get_task(task)
        self.outputs = list(self.task.head_outputs)
        self.reduce = reduce
        self.config = AutoConfig.from_pretrained(model_path)
        self.name = onnx_backend_name(path)

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> list[np.ndarray]:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        out = self.session.run(self.outputs, {k: v for k, v in feed.items() if k in self.inputs})
        return self.task.reduce_numpy(out) if self.reduce else out


def export_onnx(
    model_path: str,
    quantize: str | None = None,
    opset: int = 17,
    fuse_attention: bool = True,
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, str]:
    """Write MODEL/onnx/model.onnx (graph-optimised fp32) and, with quantize="int8", model.int8.onnx and, given
    `calibration` inputs and OpenVINO, MODEL/openvino/model.int8.xml (static int8). Returns the files written.
    `fuse_attention=False` keeps the model's own (SDPA) attention unfused and int8 on the other MatMuls only: the
    earlier export, kept for benchmarks/onnx_export.py."""
    import time

    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    from nlpbatch.progress import say
    from nlpbatch.tasks import get_task, task_of_model

    name = task_of_model(model_path)
    if name is None:
        raise ValueError(f"{model_path}: config.json names no architecture of a task nlpbatch knows")
    t0 = time.perf_counter()
    say(f"export: loading the {name} model from {model_path}")
    task = get_task(name)
    model = task.load_trained(model_path).eval()
    # Traced from the eager attention: ONNX Runtime's BERT optimizer fuses that pattern into one Attention op (and
    # int8 then quantizes its QKV projection too); the SDPA trace stays ~50 unfused ops. Measured in
    # benchmarks/results/onnx_export_cpu.json.
    if fuse_attention:
        model.set_attn_implementation("eager")
    folder = Path(model_path) / ONNX_DIR
    folder.mkdir(exist_ok=True)
    from nlpbatch.engines import openvino_engine

    stale = Path(model_path) / openvino_engine.OPENVINO_DIR / openvino_engine.OPENVINO_FILE
    for old in (stale, stale.with_suffix(".bin")):  # a file of earlier weights must never be picked up
        old.unlink(missing_ok=True)
    raw = folder / "model.raw.onnx"
    ids = torch.ones((2, 16), dtype=torch.long)
    say("export: tracing the model to ONNX (fp32)")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names + list(task.head_outputs)}
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        # TracerWarnings about Python booleans in the mask code: the exported graph is checked against torch by tests
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(raw),
            input_names=names,
            output_names=list(task.head_outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles these encoders
        )
    config = model.config
    say(f"export: optimizing the graph (fused attention: {'yes' if fuse_attention else 'no'})")
    optimized = optimize_model(
        str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    written = {"fp32": str(folder / ONNX_FILES["fp32"])}
    optimized.save_model_to_file(written["fp32"])
    if quantize == "int8":
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        written["int8"] = str(folder / ONNX_FILES["int8"])
        say("export: quantizing to int8 (dynamic, per channel)")
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is for static quantization
        try:
            quantize_dynamic(
                written["fp32"],
                written["int8"],
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,  # 7-bit weights: exact on CPUs without VNNI (AVX2 only)
                op_types_to_quantize=["MatMul", "Attention"] if fuse_attention else ["MatMul"],
                extra_options={"DefaultTensorType": TensorProto.FLOAT},  # outputs of the fused (contrib) ops are float
            )
        finally:
            root.setLevel(level)
        if calibration and openvino_engine.available():
            say(f"export: quantizing to OpenVINO static int8 (calibrated on {len(calibration)} examples)")
            written["openvino-int8"] = openvino_engine.export_openvino(raw, stale.parent, calibration)
        elif calibration:
            say("export: OpenVINO int8 not written: OpenVINO is not installed (pip install openvino nncf)")
    elif (folder / ONNX_FILES["int8"]).exists():
        (folder / ONNX_FILES["int8"]).unlink()  # a stale int8 file of earlier weights must not be picked up
    raw.unlink()
    say(f"export: wrote {', '.join(written)} under {model_path} in {time.perf_counter() - t0:.0f} s")
    return written
