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


def test_sentence_tags_use_model_label_order_and_score_every_word():
    model_names = {0: "B-PER", 1: "O"}  # a model whose id2label differs from the data's order
    # 3 words; word 1 has no first subtoken in the window (cut off, or U+200B): it is predicted "O"
    assert ner.sentence_tags([1, 0, 0, 0], [-1, 0, -1, 2], 3, model_names) == ["B-PER", "O", "B-PER"]
