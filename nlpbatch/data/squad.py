"""SQuAD v1.1 / v2.0 JSON -> `datasets.Dataset` with the hub `squad` features, validated on load. A v2.0 question
marked `is_impossible` has no answers (the hub's `squad_v2` layout: empty lists)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nlpbatch.data import DataError, read_rows, read_text

HUB_NAME = "rajpurkar/squad"


def squad_features():
    from datasets import Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "title": Value("string"),
            "context": Value("string"),
            "question": Value("string"),
            "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
        }
    )


@dataclass
class SkipReport:
    """Questions left out under --skip-invalid, with the reason for each (written to metrics.json)."""

    skipped: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.skipped)


def validate_example(ex: dict) -> str | None:
    """Why a flattened SQuAD example is unusable, or None if it is fine."""
    for key in ("id", "context", "question", "answers"):
        if key not in ex or ex[key] is None:
            return f"missing field {key!r}"
    if not isinstance(ex["context"], str) or not ex["context"].strip():
        return "empty context"
    if not isinstance(ex["question"], str) or not ex["question"].strip():
        return "empty question"
    answers = ex["answers"]
    texts, starts = answers.get("text"), answers.get("answer_start")
    if texts is None or starts is None or len(texts) != len(starts):
        return "answers must have as many 'text' as 'answer_start' entries"
    for text, start in zip(texts, starts):
        if not isinstance(start, int) or ex["context"][start : start + len(text)] != text:
            return f"answer {text!r} is not at answer_start {start} in the context"
    return None


def flatten_squad_json(path: str | Path) -> list[dict]:
    """data[].paragraphs[].qas[] -> one flat dict per question (the hub's layout)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SQuAD file not found")
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: expected a SQuAD v1.1 object with a 'data' list")
    rows = []
    for a_i, article in enumerate(doc["data"]):
        for p_i, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context")
            for q_i, qa in enumerate(para.get("qas", [])):
                qid = qa.get("id") or f"{path.name}:data[{a_i}].paragraphs[{p_i}].qas[{q_i}]"
                answers = qa.get("answers") or []
                impossible = qa.get("is_impossible") is True
                rows.append(
                    {
                        "id": str(qid),
                        "title": article.get("title", ""),
                        "context": context,
                        "question": qa.get("question"),
                        "answers": {
                            "text": [a.get("text") for a in answers],
                            "answer_start": [a.get("answer_start") for a in answers],
                        },
                        "_missing_answers": "answers" not in qa,
                        "_impossible": impossible,
                    }
                )
    if not rows:
        raise DataError(f"{path}: no questions found")
    return rows


def flatten_rows(path: str | Path) -> list[dict]:
    """JSON Lines or Parquet rows in the hub's layout, `id, context, question, answers{text, answer_start}` (answers
    as a list of {text, answer_start} too), one question each; a row whose answers are empty (or `is_impossible`) is
    unanswerable, as in the hub's squad_v2."""
    path = Path(path)
    rows = []
    for number, record in read_rows(path):  # each a dict
        missing = [k for k in ("context", "question") if k not in record]
        if missing:
            raise DataError(
                f"{path}:{number}: a QA row needs id, context, question and answers{{text, answer_start}}; "
                f"{', '.join(missing)} missing (got {sorted(record)})"
            )
        answers = record.get("answers")
        if isinstance(answers, list):  # [{"text", "answer_start"}, ...]
            answers = {
                "text": [a.get("text") for a in answers if isinstance(a, dict)],
                "answer_start": [a.get("answer_start") for a in answers if isinstance(a, dict)],
            }
        answers = answers if isinstance(answers, dict) else {}
        rows.append(
            {
                "id": str(record.get("id") or f"{path.name}:{number}"),
                "title": record.get("title") or "",
                "context": record["context"],
                "question": record["question"],
                "answers": {
                    "text": list(answers.get("text") or []),
                    "answer_start": list(answers.get("answer_start") or []),
                },
                "_missing_answers": "answers" not in record,
                "_impossible": record.get("is_impossible") is True or not answers.get("text"),
            }
        )
    if not rows:
        raise DataError(f"{path}: no questions found (empty file?)")
    return rows


def check_examples(
    rows: list[dict], source: str, skip_invalid: bool, skips: SkipReport, unanswerable_ok: bool = False
) -> list[dict]:
    """Raise on the first invalid question (naming its id) or, with skip_invalid, record and drop it. A question
    without answers is unanswerable (SQuAD v2.0) when marked `is_impossible` or when `unanswerable_ok` (the hub's
    squad_v2 layout); otherwise it is an error (a v1.1 file missing its answers)."""
    kept = []
    for row in rows:
        impossible = row.pop("_impossible", False) or unanswerable_ok
        reason = "missing field 'answers'" if row.pop("_missing_answers", False) else validate_example(row)
        if reason is None and not row["answers"]["text"] and not impossible:
            reason = 'no answers (an unanswerable SQuAD v2.0 question needs "is_impossible": true)'
        if reason is None:
            kept.append(row)
        elif skip_invalid:
            skips.skipped.append({"id": row.get("id"), "source": source, "reason": reason})
        else:
            raise DataError(f"{source}: question {row.get('id')!r}: {reason} (use --skip-invalid to skip such rows)")
    return kept


def load_squad(
    path: str | Path,
    max_examples: int | None = None,
    skip_invalid: bool = False,
    skips: SkipReport | None = None,
):
    from datasets import Dataset

    flat = Path(path).suffix.lower() in (".jsonl", ".parquet")  # the hub's row layout, else SQuAD's nested JSON
    rows = (flatten_rows if flat else flatten_squad_json)(path)
    rows = check_examples(rows, str(path), skip_invalid, skips or SkipReport())
    if max_examples is not None:
        rows = rows[:max_examples]
    return Dataset.from_list(rows, features=squad_features())


def load_squad_hub(
    name: str = HUB_NAME,
    split: str = "train",
    max_examples: int | None = None,
    skip_invalid: bool = False,
    skips: SkipReport | None = None,
):
    from nlpbatch.data import load_hub_dataset

    ds = load_hub_dataset(name, split, "squad/{train,validation}.json")
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    # squad_v2 and its copies: a question without answers is unanswerable
    v2 = "v2" in name.lower()
    rows = check_examples([dict(r) for r in ds], f"{name}[{split}]", skip_invalid, skips or SkipReport(), v2)
    from datasets import Dataset

    return Dataset.from_list(rows, features=squad_features())
