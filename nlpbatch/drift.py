"""Drift per night: what each run predicted, per label (how many, their summed score), kept in its manifest
(`labels`), and a night compared with the nights before it.

A label is flagged when, against the trailing nights together (up to TRAILING of them):
  - its share of the night's predictions moved by more than SHARE_POINTS (absolute) and the move is beyond
    chance (|z| > Z_BOUND, a two-proportion z-test), or
  - its mean score moved by more than SCORE_POINTS (with at least MIN_COUNT predictions of it on both sides).
Both bounds together keep a large night from flagging noise and a small one from flagging a handful of rows.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

TRAILING, SHARE_POINTS, Z_BOUND, SCORE_POINTS, MIN_COUNT = 7, 0.05, 4.0, 0.10, 20


def label_stats(table: pa.Table) -> dict[str, list[float]]:
    """{label: [count, score sum]} of a batch of output rows: every list-of-structs column with label and score
    (NER entities) and a top-level `label` with `score` (a document label)."""
    found: dict[str, list[float]] = {}

    def add(labels: pa.Array, scores: pa.Array) -> None:
        valid = pc.is_valid(labels)
        labels, scores = labels.filter(valid), pc.fill_null(scores.filter(valid).cast(pa.float64()), 0.0)
        if len(labels) == 0:
            return
        grouped = (
            pa.table({"label": labels, "score": scores})
            .group_by("label")
            .aggregate([("score", "count"), ("score", "sum")])
        )
        for label, count, total in zip(*(grouped[c].to_pylist() for c in ("label", "score_count", "score_sum"))):
            entry = found.setdefault(str(label), [0, 0.0])
            entry[0] += count
            entry[1] += total

    for name in table.column_names:
        column = table[name]
        kind = column.type
        if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
            names = {kind.value_type.field(i).name for i in range(kind.value_type.num_fields)}
            if {"label", "score"} <= names:
                flat = pc.list_flatten(column)
                add(pc.struct_field(flat, "label"), pc.struct_field(flat, "score"))
    if "label" in table.column_names and "score" in table.column_names and pa.types.is_string(table["label"].type):
        add(table["label"].combine_chunks(), table["score"].combine_chunks())
    return found


def merge(parts: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for part in parts:
        for label, (count, total) in part.items():
            entry = merged.setdefault(label, [0, 0.0])
            entry[0] += count
            entry[1] += total
    return merged


def summary(stats: dict[str, list[float]]) -> dict[str, dict]:
    """The manifest's `labels`: per label its count, share of all predictions and mean score."""
    total = sum(count for count, _ in stats.values())
    return {
        label: {
            "count": int(count),
            "share": count / total if total else 0.0,
            "mean_score": s / count if count else 0.0,
        }
        for label, (count, s) in sorted(stats.items())
    }


def compare(night: dict[str, dict], before: list[dict[str, dict]]) -> list[dict]:
    """The labels of `night` (a manifest's `labels`) that moved against the trailing nights' `labels` together:
    [{label, kind: share|score, now, before, ...}]; [] without earlier nights."""
    if not before:
        return []
    base: dict[str, list[float]] = {}
    for earlier in before:
        for label, entry in earlier.items():
            b = base.setdefault(label, [0, 0.0])
            b[0] += entry["count"]
            b[1] += entry["mean_score"] * entry["count"]
    n_now = sum(e["count"] for e in night.values())
    n_before = sum(c for c, _ in base.values())
    flags = []
    for label in sorted(set(night) | set(base)):
        now = night.get(label, {"count": 0, "mean_score": 0.0})
        count_before, score_before = base.get(label, [0, 0.0])
        p_now = now["count"] / n_now if n_now else 0.0
        p_before = count_before / n_before if n_before else 0.0
        pooled = (now["count"] + count_before) / max(1, n_now + n_before)
        sd = math.sqrt(pooled * (1 - pooled) * (1 / max(1, n_now) + 1 / max(1, n_before)))
        z = (p_now - p_before) / sd if sd else 0.0
        if abs(p_now - p_before) > SHARE_POINTS and abs(z) > Z_BOUND:
            flags.append({"label": label, "kind": "share", "now": p_now, "before": p_before, "z": z})
        if now["count"] >= MIN_COUNT and count_before >= MIN_COUNT:
            mean_before = score_before / count_before
            if abs(now["mean_score"] - mean_before) > SCORE_POINTS:
                flags.append({"label": label, "kind": "score", "now": now["mean_score"], "before": mean_before})
    return flags
