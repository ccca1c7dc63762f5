import pytest

from nlpbatch.data import DataError
from nlpbatch.data.conll import NER_LABELS, load_conll, parse_conll

GOOD = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def write(tmp_path, text, name="train.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_sentences_into_hub_features(tmp_path):
    ds = load_conll(write(tmp_path, GOOD))
    assert ds["tokens"] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert ds.features["ner_tags"].feature.names == NER_LABELS
    assert ds["ner_tags"][1] == [NER_LABELS.index("B-PER"), NER_LABELS.index("I-PER")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ O\n", ":2: expected 4 columns"),
        ("EU NNP B-NP B-ORGANISATION\n", ":1: unknown NER tag 'B-ORGANISATION'"),
        ("EU NNP B-NP O\nrejects VBZ B-VP I-ORG\n", ":2: IOB2 tag I-ORG follows O"),
        ("EU NNP B-NP B-PER\nrejects VBZ B-VP I-ORG\n", ":2: IOB2 tag I-ORG follows B-PER"),
        ("\n\n", "no sentences found"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        parse_conll(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_split_is_a_clear_error(tmp_path):
    from nlpbatch.tasks.ner import load_split

    write(tmp_path, GOOD, "train.txt")
    with pytest.raises(FileNotFoundError, match="no validation split"):
        load_split(str(tmp_path), "validation")


def test_shared_data_sizes(data_dir):
    assert len(parse_conll(data_dir / "conll2003" / "train.txt")) == 14041
    assert len(parse_conll(data_dir / "conll2003" / "validation.txt")) == 3250
