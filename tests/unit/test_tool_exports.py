"""Labelling-tool exports as the tools write them (tests/fixtures/exports, made by label-studio-sdk's converter and
spaCy where they install: `make.py`; doccano's and Prodigy's documented shapes otherwise): several annotators,
cancelled and rejected work, non-span results, nested spans, other text keys, Chinese and combining marks. Each
reads as its tool meant, with what was used, skipped and resolved counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nlpbatch.data import DataError
from nlpbatch.data import spans as spans_mod
from nlpbatch.data.spans import load_records, spans_to_tags, words

EXPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "exports"


def _entities(row: dict) -> list[tuple[str, str]]:
    """(type, words) of each entity of an IOB2 row."""
    found = []
    for token, tag in zip(row["tokens"], row["ner_tags"]):
        if tag.startswith("B-"):
            found.append([tag[2:], [token]])
        elif tag.startswith("I-"):
            found[-1][1].append(token)
    return [(label, " ".join(ws)) for label, ws in found]


def _by_text(rows: list[dict]) -> dict[str, list]:
    return {"".join(r["tokens"]): _entities(r) for r in rows}


def test_a_label_studio_project_with_two_annotators_reads_as_the_tool_meant(capsys):
    rows = load_records(EXPORTS / "label_studio_project.json")
    said = capsys.readouterr().err
    got = {r["id"]: _entities(r) for r in rows}
    assert sorted(got) == ["1", "2", "5", "6", "7"]  # the cancelled task 3 and the predictions-only task 4: left out
    assert got["1"] == [("PER", "Angela Merkel"), ("LOC", "Berlin")]  # two annotators who agree: no "overlap"
    assert got["2"] == [("ORG", "Bank of England")]  # the ground truth, its nested LOC 'England' resolved: longest
    assert got["5"] == [("ORG", "Apple"), ("LOC", "Cupertino")]  # a region with two labels: the first
    assert got["6"] == [("LOC", "北 京"), ("PER", "王 小 明"), ("PER", "李 华")]  # every CJK character a word
    assert got["7"] == [("PER", "Barack Obama"), ("LOC", "Washington")]
    for line in [
        "cancelled (skipped) annotations left out: 1 (row 3)",
        "tasks with predictions only, left out: 1 (row 4)",
        "choices results ignored (not spans): 1 (row 1)",
        "textarea results ignored (not spans): 1 (row 1)",
        "regions with several labels: the first kept: 1 (row 5)",
        "tasks with several annotations: its ground_truth one used (--annotations): 1 (row 2)",
        "tasks with several annotations: the most recent used (--annotations): 1 (row 1)",
        "overlapping or nested spans left out (--overlaps longest): 1 (row 2)",
        "spans with whitespace at an edge, trimmed: 1 (row 7)",
        "annotator agreement (span F1, exact match) over 2 task(s) with 2+ annotations: 0.571 (LOC 0.67, ORG 0.00, "
        "PER 1.00)",
        "read as label-studio (5 records, 10 entities)",
    ]:
        assert line in said, (line, said)
    report = spans_mod.REPORTS[-1]
    assert report["agreement"]["tasks"] == 2 and report["counts"]["cancelled (skipped) annotations left out"] == 1


def test_annotation_policies_all_and_agreed():
    every = load_records(EXPORTS / "label_studio_project.json", annotations="all")
    ids = ["1/annotation 11", "1/annotation 12", "2/annotation 21", "2/annotation 22", "5", "6", "7"]
    assert sorted(r["id"] for r in every) == ids
    agreed = {r["id"]: _entities(r) for r in load_records(EXPORTS / "label_studio_project.json", annotations="agreed")}
    assert agreed["1"] == [("PER", "Angela Merkel"), ("LOC", "Berlin")] and agreed["2"] == []  # no span in common
    with pytest.raises(DataError, match="spans overlap: LOC 'England' and ORG 'Bank of England'"):
        load_records(EXPORTS / "label_studio_project.json", overlaps="error")
    nested_first = load_records(EXPORTS / "label_studio_project.json", overlaps="first")
    assert _by_text(nested_first)["TheBankofEnglandraisedrates."] == [("ORG", "Bank of England")]


def test_json_min_from_the_sdk_converter_and_another_text_key_read_the_same():
    full = _by_text(load_records(EXPORTS / "label_studio_project.json"))
    minimal = _by_text(load_records(EXPORTS / "label_studio_min.json"))
    # the converter dropped the cancelled task; JSON-MIN has no ground_truth flag, so task 2 takes its most recent
    # annotation: 'Bank' alone
    assert minimal == {**full, "TheBankofEnglandraisedrates.": [("ORG", "Bank")]}
    sentence = _by_text(load_records(EXPORTS / "label_studio_sentence_key.json"))
    assert sentence == full  # `$sentence`, the task's one text field


def test_spacy_doc_to_json_and_docbin_read_all_their_entities(capsys):
    pytest.importorskip("spacy")
    from_json = _by_text(load_records(EXPORTS / "spacy_doc.jsonl"))
    assert "read as spacy-doc (3 records, 6 entities)" in capsys.readouterr().err
    from_docbin = _by_text(load_records(EXPORTS / "train.spacy"))
    assert from_json == from_docbin
    assert from_json["我在北京工作。"] == [("LOC", "北 京")]
    assert from_json["Zoe\u0308MüllerworksatSiemensinMünchen."][0] == ("PER", "Zoe\u0308 Müller")


def test_a_record_of_another_shape_is_an_error_not_all_o(tmp_path):
    path = tmp_path / "doc.jsonl"
    shutil.copy(EXPORTS / "spacy_doc.jsonl", path)
    with pytest.raises(DataError, match=r"doc.jsonl:1: no 'label' or 'labels' or 'entities' key in a doccano record"):
        load_records(path, data_format="doccano")
    with pytest.raises(DataError, match=r"doc.jsonl:1: no 'spans' or 'entities' key in a spacy record"):
        load_records(path, data_format="spacy")


def test_doccano_with_relations_and_a_collaborative_export(tmp_path, capsys):
    text = "Angela Merkel met Emmanuel Macron in Paris."
    records = [
        {  # doccano 1.8 sequence labelling with relations enabled
            "id": 7,
            "text": text,
            "entities": [
                {"id": 1, "label": "PER", "start_offset": 0, "end_offset": 13},
                {"id": 2, "label": "PER", "start_offset": 18, "end_offset": 33},
                {"id": 3, "label": "LOC", "start_offset": 37, "end_offset": 42},
            ],
            "relations": [{"id": 1, "from_id": 1, "to_id": 2, "type": "met"}],
            "Comments": [],
        }
    ]
    (tmp_path / "rel.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (row,) = load_records(tmp_path / "rel.jsonl")
    assert _entities(row) == [("PER", "Angela Merkel"), ("PER", "Emmanuel Macron"), ("LOC", "Paris")]
    assert "doccano relations ignored: 1 (row 1)" in capsys.readouterr().err
    # collaborative: both annotators' labels in one list; the same span twice is one, a conflict is resolved
    merged = {"id": 8, "text": text, "label": [[0, 13, "PER"], [0, 13, "PER"], [37, 42, "LOC"], [37, 42, "ORG"]]}
    (tmp_path / "collab.jsonl").write_text(json.dumps(merged) + "\n")
    (row,) = load_records(tmp_path / "collab.jsonl")
    assert _entities(row) == [("PER", "Angela Merkel"), ("LOC", "Paris")]


def test_prodigy_db_out_records(tmp_path, capsys):
    text = "Angela Merkel visited Paris."
    tokens = [{"text": w, "start": s, "end": e, "id": i, "ws": True} for i, (s, e, w) in enumerate([(0, 6, "Angela")])]

    def record(answer, spans, annotator, input_hash=1):
        return {
            "text": text,
            "tokens": tokens,
            "spans": spans,
            "answer": answer,
            "_input_hash": input_hash,
            "_task_hash": 2,
            "_view_id": "ner_manual",
            "_annotator_id": annotator,
            "_session_id": annotator,
            "_timestamp": 1700000000,
        }

    per = {"start": 0, "end": 13, "token_start": 0, "token_end": 1, "label": "PER"}
    loc = {"start": 22, "end": 27, "token_start": 3, "token_end": 3, "label": "LOC"}
    lines = [
        record("accept", [per, loc], "ner-alice"),
        record("accept", [per], "ner-bob"),
        record("reject", [per], "ner-carol", input_hash=3),
        record("ignore", [], "ner-dave", input_hash=4),
    ]
    (tmp_path / "prodigy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = load_records(tmp_path / "prodigy.jsonl")
    said = capsys.readouterr().err
    assert len(rows) == 1 and "read as prodigy" in said
    assert "Prodigy answers 'reject' left out: 1 (row 3)" in said and "Prodigy answers 'ignore' left out" in said
    assert "over 1 task(s) with 2+ annotations: 0.667" in said
    agreed = load_records(tmp_path / "prodigy.jsonl", annotations="agreed")
    assert _entities(agreed[0]) == [("PER", "Angela Merkel")]


@pytest.mark.parametrize(
    "text",
    [
        "我在北京工作，认识了王小明和李华。",
        "東京タワーに行った。",
        "Zoe\u0308 Müller met José in Zürich, 5€ price!",
        "Paris-based $5 U.S.A. e-mail naïve café ☃ 😀x",
        "สวัสดีครับ ผม",
    ],
)
def test_words_are_the_words_the_tokenizer_sees(text):
    """The independent check: the bundled BERT tokenizer's own word ids group the same characters."""
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    theirs: dict[int, tuple[int, int]] = {}
    for word, (a, b) in zip(enc.word_ids(), enc["offset_mapping"]):
        s, e = theirs.get(word, (a, b))
        theirs[word] = (min(s, a), max(e, b))
    ours = words(text)
    assert [s for s, _ in ours] == [s for s, _ in theirs.values()]  # the same words, from the same characters
    # ... and a word's end is its own end or the tokenizer's (which drops a combining mark its normalizer strips)
    assert all(e >= e2 for (_, e), (_, e2) in zip(ours, theirs.values()))


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("我在北京工作", (2, 4)),
        ("我在北京工作，认识了王小明。", (10, 13)),
        ("Zoe\u0308 Müller arrived.", (0, 4)),
        ("Zoe\u0308 Müller arrived.", (0, 3)),  # ends before the combining mark: the character is not cut
        ("Crème brûlée in Besançon.", (16, 24)),
    ],
)
def test_spans_align_as_spacy_aligns_them(text, span):
    """Against spaCy's own Doc.char_span (expand) on a blank pipeline of the text's language."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("zh" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en")
    doc = nlp(text)
    expected = doc.char_span(*span, label="X", alignment_mode="expand")
    tokens, tags, _ = spans_to_tags(text, [(*span, "X")], "expand")
    starts = [s for s, _ in words(text)]
    got_start = starts[tags.index("B-X")]
    got_end = words(text)[max(i for i, t in enumerate(tags) if t != "O")][1]
    assert (got_start, got_end) == (expected.start_char, expected.end_char)
    assert text[got_start:got_end] == expected.text


def test_strict_refuses_whitespace_at_an_edge_as_spacy_does():
    spacy = pytest.importorskip("spacy")
    text = "We met  Barack Obama  today."
    assert text[7:21] == " Barack Obama " and spacy.blank("en")(text).char_span(7, 21, alignment_mode="strict") is None
    with pytest.raises(ValueError, match="whitespace trimmed: PER ' Barack Obama ' .*strict refuses it"):
        spans_to_tags(text, [(7, 21, "PER")], "strict")
    assert spans_to_tags(text, [(7, 21, "PER")], "expand")[1][2:4] == ["B-PER", "I-PER"]


def test_a_conll_token_line_starting_with_a_hash(tmp_path):
    from nlpbatch.data.conll import parse_conll

    (tmp_path / "c.txt").write_text("# a comment\nPrice NN O\n# SYM O\n5 CD O\n\n# sent_id = 2\nParis NNP B-LOC\n")
    rows = parse_conll(tmp_path / "c.txt")
    assert [r["tokens"] for r in rows] == [["Price", "#", "5"], ["Paris"]]


def test_our_own_outputs_read_back_in_every_script(tmp_path):
    """What annotate writes as spaCy and Label Studio records reads back as the same entities, CJK included (a
    reviewer accepting the Label Studio predictions turns them into its annotation)."""
    from nlpbatch.data.exports import label_studio_task, spacy_record

    rows = [
        ("我在北京工作，认识了王小明。", [(2, 4, "LOC", 0.9), (10, 13, "PER", 0.8)]),
        ("Zoe\u0308 Müller met José in Zürich.", [(0, 11, "PER", 0.9), (24, 30, "LOC", 0.7)]),
    ]
    spacy_lines = [spacy_record({"id": str(i), "text": t}, s, "text") for i, (t, s) in enumerate(rows)]
    (tmp_path / "out.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in spacy_lines))
    tasks = [label_studio_task({"id": str(i), "text": t}, s, "text", "v1") for i, (t, s) in enumerate(rows)]
    for task in tasks:  # the reviewer accepts the pre-annotation: Label Studio copies it into an annotation
        task["annotations"] = [{"id": 1, "result": task["predictions"][0]["result"], "was_cancelled": False}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks, ensure_ascii=False))
    want = [[(label, text[s:e]) for s, e, label, _ in spans] for text, spans in rows]
    for path in (tmp_path / "out.jsonl", tmp_path / "ls.json"):
        got = [[(label, "".join(ws.split())) for label, ws in _entities(r)] for r in load_records(path)]
        assert got == [[(label, piece.replace(" ", "")) for label, piece in w] for w in want], path
