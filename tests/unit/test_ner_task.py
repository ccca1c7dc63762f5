from types import SimpleNamespace

from nlpbatch.config import TrainConfig
from nlpbatch.data.conll import NER_LABELS, load_conll
from nlpbatch.tasks import ner

B_PER, I_PER, O = NER_LABELS.index("B-PER"), NER_LABELS.index("I-PER"), 0


def test_continuation_maps_b_to_i():
    cont = ner.continuation_ids(NER_LABELS)
    assert [NER_LABELS[c] for c in cont] == [
        "O",
        "I-PER",
        "I-PER",
        "I-ORG",
        "I-ORG",
        "I-LOC",
        "I-LOC",
        "I-MISC",
        "I-MISC",
    ]


def test_alignment_first_subtoken_keeps_label_continuations_get_i():
    # [CLS] wolf ##gang schmidt [SEP]: word 0 split in two subtokens
    word_ids = [None, 0, 0, 1, None]
    train, first = ner.align_labels(word_ids, [B_PER, I_PER], ner.continuation_ids(NER_LABELS))
    assert train == [-100, B_PER, I_PER, I_PER, -100]
    assert first == [-100, B_PER, -100, I_PER, -100]


def test_features_with_real_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from nlpbatch.models import resolve_model

    path = tmp_path / "x.txt"
    path.write_text("Wolfgangsee NNP B-NP B-LOC\nis VBZ B-VP O\n")
    raw = load_conll(path)
    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    cfg = SimpleNamespace(max_length=512, subtoken_labels="all")
    [train] = ner.train_features(raw, tok, cfg)
    [ev] = ner.eval_features(raw, tok, cfg)
    n_sub = len(tok.tokenize("Wolfgangsee"))
    assert n_sub > 1
    loc, iloc = NER_LABELS.index("B-LOC"), NER_LABELS.index("I-LOC")
    assert train["labels"] == [-100, loc] + [iloc] * (n_sub - 1) + [O, -100]
    assert ev["labels"] == [-100, loc] + [-100] * (n_sub - 1) + [O, -100]
    # subtoken_labels="first" (the default, and Hugging Face run_ner's): continuation subtokens are not trained
    [first] = ner.train_features(raw, tok, TrainConfig(task="ner", output="x"))
    assert first["labels"] == ev["labels"]
    assert "word_index" not in first and first["input_ids"] == train["input_ids"]


def test_word_labels_take_each_word_from_its_best_window():
    # one sentence of 4 words in two overlapping windows (CLS/SEP = -1); word 2 has two subtokens (starts 0, 3)
    first = {"example": 0, "word_index": [-1, 0, 1, 2, -1], "word_start": [0, 0, 0, 0, 0]}
    second = {"example": 0, "word_index": [-1, 1, 2, 2, 3, -1], "word_start": [0, 0, 0, 3, 0, 0]}
    other = {"example": 1, "word_index": [-1, 0, -1], "word_start": [0, 0, 0]}  # a one-word sentence
    pred = [[9, 1, 1, 1, 9, 9], [9, 2, 2, 2, 2, 9], [9, 5, 9, 9, 9, 9]]
    labels = ner.word_labels([first, second, other], pred)
    # word 0: only in the first window; word 1: margin 1 in the first, 0 in the second; word 2's first subtoken:
    # margin 0 in the first, 1 in the second; word 3: only in the second
    assert labels == {(0, 0): 1, (0, 1): 1, (0, 2): 2, (0, 3): 2, (1, 0): 5}
