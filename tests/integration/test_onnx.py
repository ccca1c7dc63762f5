"""The exported engines end to end: `nlpbatch export`, then annotate and evaluate with them. fp32 ONNX must give the
torch spans (labels and offsets exactly, scores to 1e-4); ONNX Runtime and OpenVINO int8 must agree with torch on
the labels of a model with clear logits here, and are checked for F1 in benchmarks/cpu_engines.py."""

import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.pipeline import annotate_texts, run_annotation
from nlpbatch.config import load_annotate_config
from nlpbatch.evaluation import eval_config, evaluate_model

pytestmark = pytest.mark.integration

TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris on Monday.",
    "Zoë Müller arbeitet bei Siemens in München 🚀 und 東京 mit José Álvarez.",
    " ".join(f"Sentence {i}: Angela Merkel visited Siemens in München with Zoë." for i in range(40)),
]


def _spans(rows, digits=4):
    return [[(e["label"], e["start"], e["end"], round(e["score"], digits)) for e in r["entities"]] for r in rows]


def _export(path, *options: str) -> tuple[dict, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "export", "--model", str(path), *options], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line for line in proc.stderr.splitlines() if line.startswith("[nlpbatch] export: ")]
    return json.loads(proc.stdout)["files"], steps  # stdout is the JSON alone (NNCF's progress goes to stderr)


@pytest.fixture(scope="module")
def exported_ner(tiny_ner_model, tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("onnx") / "ner"
    shutil.copytree(tiny_ner_model, path)
    conll = str(data_dir / "conll2003" / "validation.txt")
    files, steps = _export(path, "--calibration-data", conll, "--calibration-examples", "64")
    assert set(files) == {"fp32", "int8", "openvino-int8"}
    assert "64 windows of" in steps[0] and len(steps) == 8  # it says what it does, step by step
    assert steps[-2].startswith("[nlpbatch] export: wrote fp32, int8, openvino-int8")
    assert steps[-1].startswith("[nlpbatch] export: agreement with torch: onnx-int8 ")
    return path


def _ops(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_export_fuses_attention_and_quantizes_it(exported_ner):
    """The fast files: one fused Attention op per layer in fp32 (the SDPA trace left ~50 loose ops), and int8
    on the attention's QKV projection too (QAttention), not only on the other MatMuls."""
    assert "Attention" in _ops(exported_ner / "onnx" / "model.onnx")
    int8 = _ops(exported_ner / "onnx" / "model.int8.onnx")
    assert {"QAttention", "MatMulInteger"} <= int8 and "Attention" not in int8


def test_onnx_fp32_spans_equal_torch_through_ray(ray_cluster, exported_ner, tmp_path):
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}), tmp_path / "in.parquet")
    common = dict(task="ner", model=str(exported_ner), max_length=64, stride=16, batch_tokens=512)
    manifest = run_annotation(
        load_annotate_config(
            input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"), backend="onnx-fp32", **common
        )
    )
    assert manifest["engine"] == "onnx-fp32"  # what ran, as the manifest says
    got = {r["id"]: r for f in manifest["output_files"] for r in pq.read_table(tmp_path / "out" / f).to_pylist()}
    reference = annotate_texts(load_annotate_config(input="-", output="-", backend="torch", **common), TEXTS)
    assert _spans([got[f"d{i}"] for i in range(len(TEXTS))]) == _spans(reference)
    assert sum(len(r["entities"]) for r in reference) > 20  # not vacuous
    from nlpbatch.engines import auto_choice, load_engine

    chosen, why = auto_choice(str(exported_ner), "ner", 1)  # after export, auto is the int8 engine fastest here
    assert load_engine("ner", str(exported_ner), "auto", threads=1).name == chosen and why.startswith("measured: ")
    assert load_engine("ner", str(exported_ner), "auto", use_gpu=True).name == "torch"  # GPU actors stay on torch


@pytest.mark.parametrize("faster", ["onnx-int8", "openvino-int8"])
def test_auto_runs_the_engine_measured_fastest_and_says_why(exported_ner, tmp_path, monkeypatch, faster):
    """The probe's outcome forced both ways (an AVX2 machine where ONNX Runtime wins, an AVX-512 one where OpenVINO
    does): annotate runs that engine, the manifest says why, and a second run reads the choice from the cache."""
    from nlpbatch.engines import choice

    speeds = {"onnx-int8": 5651.0, "openvino-int8": 3411.0}
    if faster == "openvino-int8":
        speeds = {"onnx-int8": 3411.0, "openvino-int8": 5651.0}
    probed = []

    def fake_speed(engine, vocab_size):
        probed.append(engine.name)
        return speeds[engine.name]

    monkeypatch.setattr(choice, "tokens_per_second", fake_speed)
    monkeypatch.setattr(choice, "_CHOSEN", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (exported_ner / choice.CACHE_FILE).unlink(missing_ok=True)
    pq.write_table(pa.table({"id": ["a"], "text": [TEXTS[0]]}), tmp_path / "in.parquet")
    cfg = load_annotate_config(
        task="ner",
        model=str(exported_ner),
        input=str(tmp_path / "in.parquet"),
        output=str(tmp_path / "out"),
        runner="local",
        max_length=64,
        stride=16,
    )
    manifest = run_annotation(cfg)
    assert manifest["engine"] == faster and sorted(probed) == ["onnx-int8", "openvino-int8"]
    other = next(b for b in speeds if b != faster)
    assert manifest["engine_choice"].startswith(f"measured: {faster} 5,651 vs {other} 3,411 tokens/s on ")
    assert "1 threads" in manifest["engine_choice"]
    monkeypatch.setattr(choice, "_CHOSEN", {})  # a new process: the cache beside the model answers, no probe
    again = run_annotation(cfg)
    assert again["engine"] == faster and len(probed) == 2 and "(cached in " in again["engine_choice"]
    (exported_ner / choice.CACHE_FILE).unlink()


def test_an_engine_that_cannot_load_on_this_cpu_is_left_out_of_the_probe(exported_ner, tmp_path, monkeypatch):
    """As OpenVINO's int8 graph failed to compile with oneDNN held to AVX2 (benchmarks/engine_choice.py): the
    other engine runs and the reason says why."""
    from nlpbatch.engines import auto_choice, choice, openvino_engine

    def refuse(*args, **kwargs):
        raise RuntimeError("Supported primitive descriptors list is empty for node: Softmax_8936 type: Softmax")

    monkeypatch.setattr(openvino_engine.OpenVinoEngine, "__init__", refuse)
    monkeypatch.setattr(choice, "_CHOSEN", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (exported_ner / choice.CACHE_FILE).unlink(missing_ok=True)
    chosen, why = auto_choice(str(exported_ner), "ner", 1)
    assert chosen == "onnx-int8" and "openvino-int8 failed to load (RuntimeError: Supported primitive" in why
    assert not (exported_ner / choice.CACHE_FILE).exists()  # not remembered: measured again next time


def test_evaluate_with_onnx_matches_torch(exported_ner, tmp_path):
    conll = tmp_path / "dev.txt"
    conll.write_text(
        "\n\n".join(
            "\n".join(f"{w} NNP B-NP {t}" for w, t in s)
            for s in [
                [("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC")],
                [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("lamb", "O")],
            ]
        )
    )
    torch_metrics, torch_preds = evaluate_model(eval_config("ner", str(exported_ner)), str(conll))
    onnx_metrics, onnx_preds = evaluate_model(eval_config("ner", str(exported_ner)), str(conll), backend="onnx-fp32")
    assert onnx_preds == torch_preds and onnx_metrics == torch_metrics
    int8_metrics, _ = evaluate_model(eval_config("ner", str(exported_ner)), str(conll), backend="onnx-int8")
    assert 0.0 <= int8_metrics["overall_f1"] <= 1.0


def test_qa_onnx_answers_equal_torch(tiny_qa_model, tmp_path):
    path = tmp_path / "qa"
    shutil.copytree(tiny_qa_model, path)
    from nlpbatch.engines import export_onnx

    export_onnx(str(path), quantize=None)
    assert "Attention" in _ops(path / "onnx" / "model.onnx")
    context = "The Eiffel Tower is in Paris. It was built in 1889 by the company of Gustave Eiffel."
    questions = ["Where is the tower?", "When was it built?", "Who built it?"]
    common = dict(task="qa", model=str(path), max_length=48, stride=16)
    ours = annotate_texts(
        load_annotate_config(input="-", output="-", backend="onnx-fp32", **common), [context] * 3, questions
    )
    ref = annotate_texts(
        load_annotate_config(input="-", output="-", backend="torch", **common), [context] * 3, questions
    )
    assert [(a["answer"]["start"], a["answer"]["end"]) for a in ours] == [
        (a["answer"]["start"], a["answer"]["end"]) for a in ref
    ]


def _tag_spans(words: list[str], tags: list[str]) -> list[tuple[str, int, int]]:
    """Character spans of the entities in word tags over " ".join(words), read as conlleval reads IOB2."""
    starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
    spans, begin, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, typ = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if begin is not None and (prefix in ("B", "O") or typ != kind):
            spans.append((kind, starts[begin], starts[i - 1] + len(words[i - 1])))
            begin = None
        if prefix in ("B", "I") and begin is None:
            begin, kind = i, typ
    return spans


@pytest.mark.parametrize("backend", ["torch", "onnx-fp32", "onnx-int8", "openvino-int8"])
def test_evaluate_scores_long_sentences_as_annotate_labels_them(exported_ner, tmp_path, backend):
    """Sentences of several windows: evaluate's word tags name exactly the entities annotate writes for the same
    text (same windows, same seam rule, same engine and predictor)."""
    vocabulary = "Angela Merkel visited Paris with Siemens engineers from Munich and Berlin on Monday".split()
    sentences = [[vocabulary[(7 * i + 3 * k) % len(vocabulary)] for i in range(40 + 25 * k)] for k in range(3)]
    conll = tmp_path / "long.txt"
    conll.write_text("\n\n".join("\n".join(f"{w} O" for w in s) for s in sentences) + "\n")
    windows = dict(max_length=32, doc_stride=8)
    metrics, predictions = evaluate_model(eval_config("ner", str(exported_ner), **windows), str(conll), backend=backend)
    assert metrics["windows"] > 3 * len(sentences) and metrics["unpredicted_words"] == 0
    annotate = load_annotate_config(
        input="-", output="-", task="ner", model=str(exported_ner), max_length=32, stride=8, backend=backend
    )
    rows = annotate_texts(annotate, [" ".join(s) for s in sentences])
    annotated = [[(e["label"], e["start"], e["end"]) for e in r["entities"]] for r in rows]
    assert sum(map(len, annotated)) >= 5  # the random head does tag something
    assert [_tag_spans(p["words"], p["pred"]) for p in predictions] == annotated


def test_the_manifest_names_the_engine_auto_ran(exported_ner, tmp_path):
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    manifest = run_annotation(
        load_annotate_config(
            task="ner",
            model=str(exported_ner),
            input=str(tmp_path / "in.jsonl"),
            output=str(tmp_path / "out"),
            runner="local",
        )
    )
    from nlpbatch.engines import auto_choice

    chosen, why = auto_choice(str(exported_ner), "ner", 1)  # the local runner's engines: one thread each
    assert manifest["engine"] == chosen and manifest["config"]["backend"] == "auto"
    assert manifest["engine_choice"] == why and chosen in ("openvino-int8", "onnx-int8")


def test_export_records_each_int8_engines_agreement_and_auto_leaves_out_one_too_far(exported_ner, tmp_path, data_dir):
    """The agreement `export` records is the share of the calibration windows' token labels each int8 engine gives
    as torch does (recounted here from the same windows); an engine recorded under MIN_AGREEMENT is not raced."""
    import numpy as np

    from nlpbatch.engines import ONNX_DIR, auto_choice, choice, load_engine
    from nlpbatch.evaluation import calibration_inputs

    record = exported_ner / ONNX_DIR / choice.AGREEMENT_FILE
    measured = json.loads(record.read_text())
    assert set(measured) == {"onnx-int8", "openvino-int8"}
    windows, _ = calibration_inputs(str(exported_ner), str(data_dir / "conll2003" / "validation.txt"), 64)
    torch_engine, onnx_engine = (load_engine("ner", str(exported_ner), b) for b in ("torch", "onnx-int8"))
    equal = total = 0
    for w in windows:
        inputs = (w["input_ids"], w["attention_mask"], w["token_type_ids"])
        a, b = (np.argmax(e(*inputs)[0], -1) for e in (torch_engine, onnx_engine))
        equal, total = equal + int((a == b).sum()), total + a.size
    assert measured["onnx-int8"] == {"agreement": round(equal / total, 5), "positions": total, "windows": 64}
    saved = record.read_text()
    try:
        far = {**measured, "openvino-int8": {**measured["openvino-int8"], "agreement": 0.9}}
        record.write_text(json.dumps(far))
        chosen, why = auto_choice(str(exported_ner), "ner", 1)
        assert chosen == "onnx-int8" and why == (
            "the only int8 engine exported; openvino-int8 left out: agrees with torch on 90.0% of positions (< 98%)"
        )
        record.write_text(json.dumps({b: {**m, "agreement": 0.5} for b, m in measured.items()}))
        assert load_engine("ner", str(exported_ner), "auto").name == "onnx-fp32"  # neither: the fp32 file
    finally:
        record.write_text(saved)


def test_int8_engines_label_as_torch_does(exported_ner):
    """Both int8 files give torch's token labels on long windows of real text (up to quantization flips of near
    ties: a random model's logits are close, so agreement, not equality, and ONNX Runtime's as the yardstick)."""
    import numpy as np
    from transformers import AutoTokenizer

    from nlpbatch.engines import load_engine

    enc = AutoTokenizer.from_pretrained(exported_ner)(
        TEXTS * 4, padding=True, truncation=True, max_length=256, return_tensors="np"
    )
    ids, mask, types = (enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids"))
    labels = {}
    for backend in ("torch", "onnx-int8", "openvino-int8"):
        engine = load_engine("ner", str(exported_ner), backend, threads=1)
        assert engine.name.startswith(backend)
        labels[backend] = engine(ids, mask, types)[0].argmax(-1)[mask == 1]
    agree = {b: float((labels[b] == labels["torch"]).mean()) for b in ("onnx-int8", "openvino-int8")}
    # one engine per thread or actor: OpenVINO's default pinned them all to one core
    assert engine.request.get_compiled_model().get_property("ENABLE_CPU_PINNING") is False
    assert agree["openvino-int8"] >= min(0.97, agree["onnx-int8"]), agree


def test_export_never_leaves_a_file_of_earlier_weights(exported_ner, tmp_path):
    """Re-exported without calibration data, or without int8, the files it did not rewrite are gone, so `auto` can
    never run weights of an earlier export; a backend whose file is missing says how to write it."""
    from nlpbatch.engines import load_engine

    path = tmp_path / "ner"
    shutil.copytree(exported_ner, path)
    files, steps = _export(path)  # the tiny model has no metrics.json: no recorded training data
    assert set(files) == {"fp32", "int8"} and any("OpenVINO int8 skipped" in line for line in steps)
    assert not (path / "openvino").exists() or not any((path / "openvino").iterdir())
    assert load_engine("ner", str(path), "auto").name == "onnx-int8"
    with pytest.raises(FileNotFoundError, match="run `nlpbatch export --model"):
        load_engine("ner", str(path), "openvino-int8")
    files, _ = _export(path, "--quantize", "none")
    assert set(files) == {"fp32"} and load_engine("ner", str(path), "auto").name == "onnx-fp32"


def test_openvino_qa_gives_start_and_end_in_the_heads_order(tiny_qa_model, tmp_path, data_dir):
    """A QA export calibrates on SQuAD questions and the OpenVINO engine returns (start, end) in the head's order:
    each of its outputs follows torch's same-named output far more closely than the other one."""
    import numpy as np
    from transformers import AutoTokenizer

    from nlpbatch.engines import load_engine

    path = tmp_path / "qa"
    shutil.copytree(tiny_qa_model, path)
    squad = str(data_dir / "squad" / "validation.json")
    files, _ = _export(path, "--calibration-data", squad, "--calibration-examples", "32")
    assert "openvino-int8" in files
    enc = AutoTokenizer.from_pretrained(path)(
        ["Where is the tower?", "Who built it?"] * 4,
        ["The Eiffel Tower is in Paris. It was built in 1889 by the company of Gustave Eiffel."] * 8,
        padding=True,
        return_tensors="np",
    )
    inputs = [enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")]
    reference = load_engine("qa", str(path), "torch", threads=1)(*inputs)
    ours = load_engine("qa", str(path), "openvino-int8", threads=1)  # (auto measures: on a tiny model ORT may win)
    assert ours.name == "openvino-int8"
    got = ours(*inputs)

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    for i in (0, 1):
        assert corr(got[i], reference[i]) > 0.9 and corr(got[i], reference[i]) > corr(got[i], reference[1 - i]) + 0.2


def test_export_calibrates_on_the_training_data_the_run_recorded(tiny_ner_model, tmp_path, data_dir):
    """Without --calibration-data, export reads the training data MODEL/metrics.json records; recorded data that is
    not readable here (a run trained elsewhere) leaves OpenVINO out with the reason, and the ONNX files are written."""
    path = tmp_path / "ner"
    shutil.copytree(tiny_ner_model, path)
    (path / "metrics.json").write_text(json.dumps({"config": {"train": str(tmp_path / "gone" / "train.txt")}}))
    files, steps = _export(path)
    assert set(files) == {"fp32", "int8"}
    assert any("is not readable here" in line for line in steps) and any("skipped" in line for line in steps)
    train = str(data_dir / "conll2003" / "validation.txt")  # stands in for a training file
    (path / "metrics.json").write_text(json.dumps({"config": {"train": train, "data_dir": None}}))
    files, steps = _export(path, "--calibration-examples", "16")
    assert set(files) == {"fp32", "int8", "openvino-int8"} and f"16 windows of {train}" in steps[0]
