"""Tag schemes: the same CoNLL sentences written in IOB1, BIOES, BILOU and IO read back as the IOB2 they came from
(IO merges adjacent entities of one type, as it must), the scheme is detected and said, and a sequence the scheme
does not allow names its file and line."""

from __future__ import annotations

import pytest

from nlpbatch.data import DataError
from nlpbatch.data.conll import parse_conll
from nlpbatch.data.schemes import detect_scheme, to_iob2


def _entities(tags: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of each IOB2 entity: written from the definition, independently of the code under test."""
    spans, start = [], None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == tags[start][2:]):
            spans.append((start, i, tags[start][2:]))
            start = None
        if tag.startswith("B-"):
            start = i
    return spans


def _write(tags: list[str], scheme: str) -> list[str]:
    out = ["O"] * len(tags)
    spans = _entities(tags)
    ends = {end for _, end, _ in spans}
    for start, end, kind in spans:
        for i in range(start, end):
            if scheme == "io":
                out[i] = kind  # a bare type
            elif scheme == "iob1":
                out[i] = f"B-{kind}" if i == start and start in ends and tags[start - 1][2:] == kind else f"I-{kind}"
            else:
                single, first, last = end - start == 1, i == start, i == end - 1
                s, e = ("U", "L") if scheme == "bilou" else ("S", "E")
                out[i] = f"{s}-{kind}" if single else f"B-{kind}" if first else f"{e}-{kind}" if last else f"I-{kind}"
    return out


@pytest.mark.parametrize("scheme", ["iob1", "bioes", "bilou", "io"])
def test_every_scheme_reads_back_as_the_iob2_it_was_written_from(scheme, data_dir, tmp_path, capsys):
    original = parse_conll(data_dir / "conll2003" / "validation.txt")[:400]
    lines = []
    for row in original:
        lines += [f"{w}\t{t}" for w, t in zip(row["tokens"], _write(row["ner_tags"], scheme))] + [""]
    path = tmp_path / f"{scheme}.conll"
    path.write_text("\n".join(lines))
    read = parse_conll(path)
    detected = {"bilou": "bioes"}.get(scheme, scheme)
    assert f"tags read as {detected.upper()} (detected), converted to IOB2" in capsys.readouterr().err
    assert parse_conll(path, detected) == read
    for got, want in zip(read, original):
        expected = want["ner_tags"]
        if scheme == "io":  # adjacent entities of one type merge: the scheme cannot tell them apart
            expected = to_iob2([t[2:] if t != "O" else "O" for t in expected], "io")
        assert got["ner_tags"] == expected and got["tokens"] == want["tokens"]
    assert sum(len(_entities(r["ner_tags"])) for r in read) > 500  # not vacuous


@pytest.mark.parametrize(
    ("text", "scheme", "message"),
    [
        ("a B-PER\nb O\n", "bioes", ":2: BIOES entity B-PER not closed before O"),
        ("a O\nb E-PER\n", "bioes", ":2: BIOES tag E-PER cannot continue"),
        ("a O\nb I-PER\n", "iob2", ":2: IOB2 tag I-PER follows O (an I- tag must continue its own entity); another"),
        ("a B-PER\nb S-LOC\n", "auto", ":2: BIOES tag S-LOC cannot start an entity after B-PER"),
        ("a PER\nb B-LOC\n", "io", ":2: tag 'B-LOC' in an IO file"),
        ("a O\nb B-PER\n", "iob1", ":2: IOB1 tag B-PER follows O"),
    ],
)
def test_impossible_sequences_name_file_and_line(tmp_path, text, scheme, message):
    path = tmp_path / "bad.conll"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        parse_conll(path, scheme)
    assert str(path) in str(err.value) and message in str(err.value)


def test_detection():
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == "iob2"
    assert detect_scheme([["I-PER", "I-PER", "B-PER", "O"]]) == "iob1"
    assert detect_scheme([["U-PER", "O"], ["B-ORG", "L-ORG"]]) == "bioes"
    assert detect_scheme([["person", "O", "creative-work"]]) == "io"
