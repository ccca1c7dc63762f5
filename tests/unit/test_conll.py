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
        ("EU NNP B-NP B-ORG\nrejects VBZ B-VP ORG\n", ":1: tag 'B-ORG' in an IO file"),  # mixed schemes
        ("EU NNP B-NP B-PER\nrejects VBZ B-VP O\nit PRP B-NP I-ORG\n", ":3: IOB2 tag I-ORG follows O"),
        ("EU NNP B-NP B-PER\nrejects VBZ B-VP I-ORG\n", ":2: IOB2 tag I-ORG follows B-PER"),
        # the second sentence's line, and the hint for a file read as IOB2
        ("EU NNP B-NP B-PER\n\nit PRP B-NP B-ORG\nis VBZ B-VP I-PER\n", ":4: IOB2 tag I-PER follows B-ORG"),
        ("EU NNP B-NP B-PER\n\nit PRP B-NP B-ORG\nis VBZ B-VP I-PER\n", "another scheme? --tag-scheme"),
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


def test_any_label_set_comes_from_the_data(tmp_path, data_dir):
    from nlpbatch.data.conll import label_set, parse_labels

    wnut = load_conll(data_dir / "wnut17" / "train.conll")  # two tab-separated columns, lower-case types
    types = ["corporation", "creative-work", "group", "location", "person", "product"]
    assert wnut.features["ner_tags"].feature.names == ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
    assert len(wnut) == 3394
    drug = write(tmp_path, "# a comment line\nAspirin B-DRUG\nhelps O\n\nIbuprofen B-DRUG\ntoo O\n", "d.txt")
    assert load_conll(drug).features["ner_tags"].feature.names == ["O", "B-DRUG", "I-DRUG"]
    # a given order is kept; a type the data has and the list lacks is appended, never an error
    given = parse_labels("DOSE,DRUG")
    assert given == ["O", "B-DOSE", "I-DOSE", "B-DRUG", "I-DRUG"]
    assert label_set(["B-DRUG", "B-ROUTE"], given) == given + ["B-ROUTE", "I-ROUTE"]
    assert parse_labels("O,B-X,I-X") == ["O", "B-X", "I-X"]
    assert label_set(["B-PER", "O"]) == NER_LABELS  # CoNLL-2003's types keep the hub's order
