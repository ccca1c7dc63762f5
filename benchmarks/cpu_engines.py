"""CPU engines side by side on the same windows, one run: ONNX Runtime fp32, its dynamic int8 variants (U8S8 with
7-bit reduced-range weights; U8S8 full range; U8U8) and static int8 (QDQ, calibrated), and OpenVINO: static int8
through NNCF (the file `nlpbatch export` writes, calibrated on the same 300 training windows) and on the fp32 graph.
Each engine's bare model step on one thread (an actor's) on the windows of three corpus length mixes; the CoNLL
validation F1 of each file with an engine module (the project's own evaluate, through the same predictor annotate
runs) beside torch fp32; and each engine's token-label agreement with torch fp32 on the long windows.

    python benchmarks/cpu_engines.py --model runs/ner --out benchmarks/results/cpu_engines_cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from annotate_corpora import job_windows  # noqa: E402
from annotate_ner import machine_info  # noqa: E402
from engine_batch import tokens_per_second  # noqa: E402

VARIANTS = {  # name: quantize_dynamic options (weights per channel; MatMuls and the fused attention)
    "int8-u8s8-reduce-range": {"weight_type": "QInt8", "reduce_range": True},  # nlpbatch export's int8
    "int8-u8s8": {"weight_type": "QInt8", "reduce_range": False},
    "int8-u8u8": {"weight_type": "QUInt8", "reduce_range": False},
}


class OrtEngine:
    """A bare ONNX Runtime session on one thread: padded int64 arrays in, the head's outputs out."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}

    def __call__(self, ids, mask, types):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.names})


class OpenVinoEngine:
    """OpenVINO's CPU plugin on the fp32 ONNX graph, one thread (it picks bf16 itself on CPUs with AVX512_BF16)."""

    def __init__(self, path: str):
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"})
        self.request = compiled.create_infer_request()
        self.names = {i.get_any_name() for i in compiled.inputs}
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, ids, mask, types):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.request.infer({k: v for k, v in feed.items() if k in self.names})


def quantize_static_qdq(fp32: str, out: str, calibration: list[dict]) -> None:
    """ONNX Runtime static int8, QDQ format: activation scales from the calibration windows, weights per channel."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        fp32,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Attention"],
    )


def label_agreement(engine, reference: list, windows: list) -> float:
    """Share of window tokens whose argmax label equals the reference engine's, one window a call."""
    import numpy as np

    same = total = 0
    for ref, window in zip(reference, windows):
        ids = window[None]
        labels = engine(ids, np.ones_like(ids), np.zeros_like(ids))[0].argmax(-1)[0]
        same, total = same + int((labels == ref).sum()), total + len(ref)
    return same / total


def quantize(fp32: str, out: str, weight_type: str, reduce_range: bool) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(
        fp32,
        out,
        weight_type=getattr(QuantType, weight_type),
        per_channel=True,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a fine-tuned NER model dir (copied; the copy is exported)")
    parser.add_argument("--data-dir", default=os.environ.get("NLPBATCH_DATA_DIR", "../shared/data"))
    parser.add_argument("--corpora", default="short:1000,mixed:600,long:100", help="KIND:ROWS, comma list")
    parser.add_argument("--batch-tokens", type=int, default=512)
    parser.add_argument("--eval-examples", type=int, help="score F1 on the first N validation sentences (all)")
    parser.add_argument("--out", default="benchmarks/results/cpu_engines_cpu.json")
    args = parser.parse_args()

    import numpy as np

    from nlpbatch.api import export
    from nlpbatch.corpus import build_rows
    from nlpbatch.engines import load_engine
    from nlpbatch.engines.openvino_engine import CALIBRATION_EXAMPLES
    from nlpbatch.engines.openvino_engine import OpenVinoEngine as ShippedOpenVino
    from nlpbatch.evaluation import calibration_inputs, eval_config, evaluate_model

    result = {
        "benchmark": "CPU engines: bare model step (1 thread) on three length mixes, CoNLL validation F1",
        "machine": machine_info(),  # the CPU model and the instruction sets the int8 kernels depend on
        "model": args.model,
        "speed_window_tokens_per_second": {},
        "validation_f1": {},
        "label_agreement_with_torch_long": {},
    }

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        base = f"{tmp}/model"
        shutil.copytree(args.model, base, ignore=shutil.ignore_patterns("onnx", "openvino", "ray_runs"))
        shipped = export(base)  # what `nlpbatch export` writes (OpenVINO int8 from the training data in metrics.json)
        fp32 = f"{base}/onnx/model.onnx"
        files = {"onnx-fp32": fp32}
        for name, options in VARIANTS.items():  # each file as the int8 of a model dir of its own, for evaluate
            folder = f"{tmp}/{name}"
            shutil.copytree(base, folder, ignore=shutil.ignore_patterns("openvino"))
            quantize(fp32, f"{folder}/onnx/model.int8.onnx", **options)
            files[name] = f"{folder}/onnx/model.int8.onnx"
        calibration, source = calibration_inputs(base, None, CALIBRATION_EXAMPLES)
        result["calibration"] = f"{len(calibration)} windows of {source} (the first training examples)"
        folder = f"{tmp}/int8-static-qdq"
        shutil.copytree(base, folder, ignore=shutil.ignore_patterns("openvino"))
        quantize_static_qdq(fp32, f"{folder}/onnx/model.int8.onnx", calibration)
        files["int8-static-qdq"] = f"{folder}/onnx/model.int8.onnx"
        engines = {name: (OrtEngine, path) for name, path in files.items()}
        import openvino

        result["machine"]["openvino"] = openvino.__version__
        engines["openvino-int8"] = (
            lambda path: ShippedOpenVino("ner", base, path, threads=1),
            shipped["openvino-int8"],
        )
        engines["openvino-fp32-graph"] = (OpenVinoEngine, fp32)
        for spec in args.corpora.split(","):
            kind, rows = spec.split(":")
            texts = [row["text"] for row in build_rows(args.data_dir, int(rows), 0, kind)]
            windows = job_windows(base, texts)
            speeds = result["speed_window_tokens_per_second"][kind] = {}
            if kind == "long":
                reference = load_engine("ner", base, "torch", threads=1)
                labels = [
                    reference(w[None], np.ones_like(w[None]), np.zeros_like(w[None]))[0].argmax(-1)[0] for w in windows
                ]
            for name, (cls, path) in engines.items():
                engine = cls(path)
                tokens_per_second(engine, windows[:30], args.batch_tokens)  # warm-up
                speeds[name] = tokens_per_second(engine, windows, args.batch_tokens)
                if isinstance(engine, OpenVinoEngine):
                    result["openvino_fp32_graph_precision"] = engine.precision
                if kind == "long":
                    result["label_agreement_with_torch_long"][name] = label_agreement(engine, labels, windows)
                print(kind, name, round(speeds[name]), flush=True)
            save()
        scored = {"torch": base, "onnx-fp32": base, "openvino-int8": base}
        scored.update({name: f"{tmp}/{name}" for name in [*VARIANTS, "int8-static-qdq"]})
        for name, folder in scored.items():
            backend = name if name in ("torch", "onnx-fp32", "openvino-int8") else "onnx-int8"
            metrics, _ = evaluate_model(
                eval_config("ner", folder), args.data_dir, max_examples=args.eval_examples, backend=backend
            )
            result["validation_f1"][name] = metrics["overall_f1"]
            print("F1", name, metrics["overall_f1"], flush=True)
            save()
        reference = result["validation_f1"]["torch"]
        eligible = [n for n in scored if n != "torch" and reference - result["validation_f1"][n] <= 0.005]
        mixed = result["speed_window_tokens_per_second"].get("mixed") or next(
            iter(result["speed_window_tokens_per_second"].values())
        )
        result["fastest_within_0.005_f1_of_torch"] = max(eligible, key=lambda n: mixed[n]) if eligible else None
        save()


if __name__ == "__main__":
    main()
