"""Drift per night: label statistics from output rows, and a planted shift flagged while a re-sampled copy of the
same distribution stays quiet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from nlpbatch.drift import compare, label_stats, merge, summary

ENTITY = pa.struct([("label", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
LABELS = ["PER", "LOC", "ORG", "MISC"]


def _night(rng, n: int, shares, means) -> dict:
    """A night's manifest `labels` from NER-shaped rows of `n` entities (5 per document)."""
    kinds = rng.choice(len(LABELS), n, p=shares)
    scores = np.clip(rng.normal(np.asarray(means)[kinds], 0.05), 0, 1)
    entities = [{"label": LABELS[k], "start": 0, "end": 1, "score": float(s)} for k, s in zip(kinds, scores)]
    docs = [entities[i : i + 5] for i in range(0, n, 5)]
    table = pa.table({"id": [str(i) for i in range(len(docs))], "entities": pa.array(docs, pa.list_(ENTITY))})
    half = table.num_rows // 2  # written by two tasks: merged as the manifest merges them
    return summary(merge([label_stats(table.slice(0, half)), label_stats(table.slice(half))]))


def test_label_stats_count_entities_and_document_labels():
    table = pa.table(
        {
            "entities": pa.array(
                [
                    [{"label": "PER", "start": 0, "end": 1, "score": 0.5}],
                    None,
                    [],
                    [
                        {"label": "PER", "start": 0, "end": 1, "score": 0.25},
                        {"label": "LOC", "start": 2, "end": 3, "score": 1.0},
                    ],
                ],
                pa.list_(ENTITY),
            )
        }
    )
    assert label_stats(table) == {"PER": [2, 0.75], "LOC": [1, 1.0]}
    labels = pa.table({"label": ["pos", "neg", None, "pos"], "score": [0.9, 0.8, None, 0.7]})
    found = summary(label_stats(labels))
    assert (
        found["pos"]["count"] == 2 and abs(found["pos"]["mean_score"] - 0.8) < 1e-12 and found["neg"]["share"] == 1 / 3
    )


def test_a_planted_shift_is_flagged_and_a_resampled_night_is_not():
    rng = np.random.default_rng(0)
    shares, means = [0.3, 0.3, 0.2, 0.2], [0.9, 0.85, 0.8, 0.7]
    before = [_night(rng, 2000, shares, means) for _ in range(7)]
    assert compare(_night(rng, 2000, shares, means), before) == []  # the same distribution: quiet
    assert compare(_night(rng, 2000, shares, means), []) == []  # no nights before: nothing to compare
    moved = compare(_night(rng, 2000, [0.2, 0.2, 0.4, 0.2], means), before)
    assert {(f["label"], f["kind"]) for f in moved} == {("ORG", "share"), ("PER", "share"), ("LOC", "share")}
    unsure = compare(_night(rng, 2000, shares, [0.9, 0.85, 0.8, 0.5]), before)
    assert [(f["label"], f["kind"]) for f in unsure] == [("MISC", "score")]
    small = compare(_night(rng, 40, [0.2, 0.2, 0.4, 0.2], means), before)  # 40 entities: a wobble, not drift
    assert all(f["kind"] != "share" for f in small)
