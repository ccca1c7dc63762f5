"""The array decode of NER spans (`tasks.ner.decode_spans`, whole batches, no per-token Python) against a plain
per-document reading of the same rules, on generated hostile batches: overlapping windows that disagree, ties
of margin and score, subword words, B- restarts, documents with no windows, label sets without B-/I- prefixes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nlpbatch.data.conll import NER_LABELS
from nlpbatch.tasks.ner import decode_spans

PLAIN_LABELS = ["O", "PER", "B-LOC", "I-LOC", "MISC"]  # some names without a B-/I- prefix continue as I-


# --- the reference: one document at a time, one token at a time ---


def _split_tag(name):
    return (name[0], name[2:]) if name.startswith(("B-", "I-")) else ("I", name)


def reference(windows, id2label, aggregation):
    best = {}
    for window in windows:
        positions = [i for i, w in enumerate(window["word_ids"]) if w >= 0]
        if not positions:
            continue
        first, last = positions[0], positions[-1]
        for i in positions:
            key = tuple(window["offsets"][i])
            margin = min(i - first, last - i)
            if key not in best or margin > best[key][0]:
                best[key] = (margin, {"start": key[0], "end": key[1], "word": window["word_ids"][i],
                                      "label": window["labels"][i], "score": window["scores"][i]})  # fmt: skip
    units = [token for _, token in sorted(best.values(), key=lambda mt: (mt[1]["start"], mt[1]["end"]))]
    if aggregation != "simple":
        words = []
        for token in units:
            if words and words[-1][0]["word"] == token["word"]:
                words[-1].append(token)
            else:
                words.append([token])
        units = []
        for group in words:
            chosen = group[0] if aggregation == "first" else max(group, key=lambda t: t["score"])
            units.append({"start": group[0]["start"], "end": group[-1]["end"], "label": chosen["label"],
                          "score": chosen["score"]})  # fmt: skip
    entities, group = [], []

    def close():
        kind = _split_tag(id2label[group[0]["label"]])[1] if group else "O"
        if kind != "O":
            entities.append((kind, group[0]["start"], group[-1]["end"], sum(u["score"] for u in group) / len(group)))

    for unit in units:
        bi, kind = _split_tag(id2label[unit["label"]])
        if group and kind == _split_tag(id2label[group[-1]["label"]])[1] and bi != "B":
            group.append(unit)
        else:
            close()
            group = [unit]
    close()
    return entities


# --- generated batches ---


@st.composite
def batches(draw):
    names = draw(st.sampled_from([NER_LABELS, PLAIN_LABELS]))
    docs = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()) and docs:
            docs.append(None)  # a rejected row: no windows
            continue
        n_words = draw(st.integers(0, 12))
        tokens, char = [], 0  # (word, start, end) per subtoken
        for word in range(n_words):
            for _ in range(draw(st.integers(1, 3))):
                width = draw(st.integers(1, 3))
                tokens.append((word, char, char + width))
                char += width
            char += 1
        size, stride = draw(st.integers(1, 6)), draw(st.integers(0, 3))
        step = max(1, size - min(stride, size - 1))
        spans = [(s, min(s + size, len(tokens))) for s in range(0, max(1, len(tokens) - stride), step)]
        windows = []
        for a, b in spans or [(0, 0)]:
            chunk = [(-1, -1, -1)] + tokens[a:b] + [(-1, -1, -1)]  # [CLS] ... [SEP]
            windows.append(
                {
                    "word_ids": [w for w, _, _ in chunk],
                    "offsets": [(s, e) for _, s, e in chunk],
                    "labels": [draw(st.integers(0, len(names) - 1)) for _ in chunk],
                    "scores": [float(np.float32(draw(st.sampled_from([0.25, 0.5, 0.75, 0.9])))) for _ in chunk],
                }
            )
        docs.append(windows)
    return names, docs, draw(st.sampled_from(["simple", "first", "max"]))


def _flat(docs):
    window_rows, token_windows, columns = [], [], {"word_ids": [], "offsets": [], "labels": [], "scores": []}
    for row, windows in enumerate(docs):
        for window in windows or []:
            window_rows.append(row)
            token_windows += [len(window_rows) - 1] * len(window["word_ids"])
            for key in columns:
                columns[key] += window[key]
    return (
        np.array(window_rows, np.int64),
        np.array(token_windows, np.int64),
        np.array(columns["offsets"], np.int32).reshape(-1, 2),
        np.array(columns["word_ids"], np.int32),
        np.array(columns["labels"], np.int8),
        np.array(columns["scores"], np.float32),
    )


@settings(max_examples=400, deadline=None)
@given(batches())
def test_array_decode_equals_the_per_document_reference(batch):
    names, docs, aggregation = batch
    id2label = dict(enumerate(names))
    spans = decode_spans(*_flat(docs), id2label, aggregation)
    got = [[] for _ in docs]
    for row, label, start, end, score in zip(*(spans[k].tolist() for k in ("row", "label", "start", "end", "score"))):
        got[row].append((label, start, end, score))
    for row, windows in enumerate(docs):
        want = reference(windows or [], id2label, aggregation)
        assert [g[:3] for g in got[row]] == [w[:3] for w in want]
        assert np.allclose([g[3] for g in got[row]], [w[3] for w in want], rtol=1e-12, atol=0)


def test_seams_take_the_window_with_more_context():
    """Two windows disagree on the token both see: the one where it lies farther from the edge wins."""
    names = NER_LABELS
    b_per, i_per, b_loc = names.index("B-PER"), names.index("I-PER"), names.index("B-LOC")
    # words 0..3, one token each; window 0 sees words 0-2, window 1 sees words 1-3
    offsets = [(-1, -1), (0, 3), (4, 7), (8, 11), (-1, -1), (-1, -1), (4, 7), (8, 11), (12, 15), (-1, -1)]
    word_ids = [-1, 0, 1, 2, -1, -1, 1, 2, 3, -1]
    labels = [0, b_per, i_per, b_loc, 0, 0, b_loc, i_per, 0, 0]
    spans = decode_spans(
        np.array([0, 0]),
        np.array([0] * 5 + [1] * 5),
        np.array(offsets, np.int32),
        np.array(word_ids, np.int32),
        np.array(labels, np.int8),
        np.full(10, 0.9, np.float32),
        dict(enumerate(names)),
        "first",
    )
    # word 1 (4-7): margin 1 in window 0 (I-PER) vs 0 in window 1; word 2 (8-11): margin 0 vs 1 (I-PER)
    assert list(zip(spans["label"], spans["start"].tolist(), spans["end"].tolist())) == [("PER", 0, 11)]
