"""The annotation plan: everything a run settles before Ray (files, format, columns, counted rows, model), tested
without a cluster."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlpbatch.annotate.plan import plan_annotation
from nlpbatch.config import ConfigError, load_annotate_config


def _jsonl(path, n, start=0):
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(start, start + n)))


def test_plan_counts_rows_of_every_file_and_reads_the_model_without_ray(tiny_ner_model, tmp_path):
    import ray

    corpus = tmp_path / "in"
    corpus.mkdir()
    _jsonl(corpus / "a.jsonl", 3)
    _jsonl(corpus / "b.jsonl", 4, 3)
    cfg = load_annotate_config(task="ner", model=str(tiny_ner_model), input=str(corpus), output=str(tmp_path / "out"))
    ray_before = ray.is_initialized()  # False in the unit subset; integration tests share one cluster
    plan = plan_annotation(cfg)
    assert (plan.fmt, plan.rows_in, plan.required) == ("jsonl", 7, ["id", "text"])
    assert [p.rsplit("/", 1)[1] for p in plan.files] == ["a.jsonl", "b.jsonl"]
    assert plan.model_path == str(tiny_ner_model) and plan.model_config.num_labels == 9
    assert ray.is_initialized() == ray_before


def test_plan_refuses_before_any_model_work(tiny_ner_model, tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    _jsonl(corpus / "a.jsonl", 2)
    pq.write_table(pa.table({"id": ["x"], "text": ["y"]}), corpus / "b.parquet")
    common = dict(model=str(tiny_ner_model), input=str(corpus), output=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="mixed input formats"):
        plan_annotation(load_annotate_config(task="ner", **common))
    (corpus / "b.parquet").unlink()
    with pytest.raises(ConfigError, match="is a ner model, not classify: use `nlpbatch annotate ner`"):
        plan_annotation(load_annotate_config(task="classify", **common))
    with pytest.raises(ConfigError, match="'body' key"):
        plan_annotation(load_annotate_config(task="ner", text_column="body", **common))


def test_every_missing_column_is_named_at_once(tiny_qa_model, tmp_path):
    corpus = tmp_path / "in.jsonl"
    corpus.write_text(json.dumps({"doc": "d", "body": "x"}) + "\n")
    common = dict(task="qa", model=str(tiny_qa_model), output=str(tmp_path / "out"))
    with pytest.raises(ConfigError) as err:
        plan_annotation(load_annotate_config(input=str(corpus), **common))
    message = str(err.value)
    assert "has a 'id' or 'text' or 'question' key" in message
    assert "set --id-column; set --text-column; set --question-column" in message
    pq.write_table(pa.table({"doc": ["d"]}), tmp_path / "in.parquet")
    with pytest.raises(ConfigError, match=r"no column 'id' or 'text' or 'question' \(columns: doc\); set --id-column"):
        plan_annotation(load_annotate_config(input=str(tmp_path / "in.parquet"), **common))
