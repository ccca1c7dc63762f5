"""A training run whose model learned nothing (only O, one class) says so with the usual fixes."""

from __future__ import annotations

from nlpbatch.metrics import seqeval_scores
from nlpbatch.tasks.classify import classification_scores
from nlpbatch.train.trainer import learned_nothing


def test_an_ner_model_that_predicts_only_o_is_named():
    gold = [["B-person", "I-person", "O"], ["O", "B-location"]]
    ev = seqeval_scores(gold, [["O", "O", "O"], ["O", "O"]])
    warning = learned_nothing(ev)
    assert warning.startswith("the model found none of the 2 validation entities (F1 0.0000)")
    assert "--epochs" in warning and "warm start" in warning
    assert learned_nothing(seqeval_scores(gold, [["B-person", "I-person", "O"], ["O", "O"]])) is None


def test_a_classifier_that_predicts_one_class_is_named():
    ev = classification_scores([0, 1, 1, 0], [1, 1, 1, 1], ["neg", "pos"])
    assert learned_nothing(ev).startswith("the model predicts 'pos' for every validation example")
    assert learned_nothing(classification_scores([0, 1, 1, 0], [0, 1, 1, 1], ["neg", "pos"])) is None
    assert learned_nothing(classification_scores([1, 1], [1, 1], ["neg", "pos"])) is None  # one gold class too
