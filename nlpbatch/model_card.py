"""The model card: `MODEL/nlpbatch.json`, written by `nlpbatch train` beside the weights it exports. It says how
the model was trained (task, label names, windows, data columns, the run's name) and is the one place every
command reads that from: `evaluate` (its default windows and columns), `annotate` and `export` (the task), `show`.
A model that nlpbatch did not train has no card; then the task comes from config.json's architecture."""

from __future__ import annotations

import json
from pathlib import Path

CARD_FILE = "nlpbatch.json"


class ModelCardError(ValueError):
    """A card that cannot be read: the CLI prints it as one error line."""


def read_card(model_path: str | Path) -> dict:
    """The card of a local model dir, {} when it has none (a hub model, a model trained elsewhere)."""
    card = Path(model_path) / CARD_FILE
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelCardError(f"{card}: not valid JSON ({err}); restore it or delete it") from err


# settings chosen at training time that evaluate and annotate take from the card unless given (windows are not among
# them: annotate's window is a throughput choice, not a property of the model; a pair model needs its pairs)
CARD_DEFAULTS = ("null_threshold", "label_thresholds", "text_pair_column", "word_unit")


def card_defaults(cfg, model_path: str | Path):
    """`cfg` (a config dataclass) with each unset CARD_DEFAULTS setting taken from the model's card."""
    import dataclasses

    card = read_card(model_path)
    given = {k: card[k] for k in CARD_DEFAULTS if card.get(k) is not None and getattr(cfg, k, 0) is None}
    return dataclasses.replace(cfg, **given) if given else cfg


def write_card(model_dir: str | Path, settings: dict) -> None:
    (Path(model_dir) / CARD_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def architectures(model_path: str | Path) -> list[str]:
    """The head classes config.json names (a model dir without config.json names none)."""
    config = Path(model_path) / "config.json"
    return list(json.loads(config.read_text()).get("architectures") or []) if config.is_file() else []
