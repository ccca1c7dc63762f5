"""Entity tag schemes, converted to IOB2 (what the NER task trains and scores): IOB2 itself (`B-` starts every
entity), IOB1 (`I-` starts an entity, `B-` only between two adjacent entities of one type), BIOES / BILOU (`S-`/`U-`
single-token entities, `E-`/`L-` last tokens) and IO (every token of an entity `I-TYPE` or a bare `TYPE`: two
adjacent entities of one type merge, as the scheme cannot tell them apart). Pure functions over tag lists."""

from __future__ import annotations

SCHEMES = ("auto", "iob2", "iob1", "bioes", "io")  # BILOU is read as BIOES
PREFIXES = "BIESLU"


class SchemeError(ValueError):
    """A tag sequence the scheme does not allow; `.index` is the position of the offending tag (`sentences_to_iob2`
    adds `.sentence` and `.scheme`)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index, self.sentence, self.scheme = index, 0, ""


def split_tag(tag: str) -> tuple[str | None, str | None]:
    """(prefix, type): ("B", "PER") for B-PER, (None, "PER") for a bare type, (None, None) for O. Types may hold
    hyphens ("creative-work"): only a single letter of BIESLU before the first "-" is a prefix."""
    if tag == "O":
        return None, None
    if len(tag) > 2 and tag[1] == "-" and tag[0] in PREFIXES:
        return tag[0], tag[2:]
    return None, tag


def detect_scheme(sentences: list[list[str]]) -> str:
    """The scheme these tags are written in: bioes when S-/E-/U-/L- appear, io for bare types, iob1 when I- tags
    start entities and B- tags never do, else iob2 (whose check then names any I- tag that starts an entity)."""
    prefixes, bare, i_starts, b_starts = set(), False, False, False
    for tags in sentences:
        previous: str | None = None
        for tag in tags:
            prefix, kind = split_tag(tag)
            if kind is not None and prefix is None:
                bare = True
            if prefix:
                prefixes.add(prefix)
            i_starts |= prefix == "I" and previous != kind
            b_starts |= prefix == "B" and previous != kind
            previous = kind
    if prefixes & set("ESLU"):
        return "bioes"
    if bare:
        return "io"
    return "iob1" if i_starts and not b_starts else "iob2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """One sentence's tags as IOB2; raises SchemeError at the first tag the scheme does not allow."""
    out: list[str] = []
    previous: tuple[str | None, str | None] = (None, None)  # (prefix as read, type) of the tag before
    for index, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        is_open = scheme == "bioes" and previous[0] in ("B", "I")  # a BIOES entity not yet closed by E-/S-
        if kind is None:
            if is_open:
                raise SchemeError(index, f"BIOES entity {tags[index - 1]} not closed before O")
            out.append("O")
        elif scheme == "io":
            if prefix not in (None, "I"):
                raise SchemeError(index, f"tag {tag!r} in an IO file (only TYPE, I-TYPE and O)")
            out.append(("I-" if previous[1] == kind else "B-") + kind)
        elif prefix is None:
            raise SchemeError(index, f"tag {tag!r} has no B-/I- prefix in a {scheme.upper()} file")
        elif scheme == "iob1":
            if prefix not in "BI":
                raise SchemeError(index, f"tag {tag!r} in an IOB1 file (only B-, I- and O)")
            if prefix == "B" and previous[1] != kind:
                raise SchemeError(
                    index,
                    f"IOB1 tag {tag} follows {tags[index - 1] if index else 'nothing'} (B- only "
                    "separates two entities of one type)",
                )
            out.append(("B-" if prefix == "B" or previous[1] != kind else "I-") + kind)
        elif scheme == "bioes":
            inside = prefix in "IEL"
            if inside != (is_open and previous[1] == kind) or (not inside and is_open):
                after = tags[index - 1] if index else "the sentence start"
                raise SchemeError(
                    index, f"BIOES tag {tag} cannot {'continue' if inside else 'start'} an entity after {after}"
                )
            out.append(("I-" if inside else "B-") + kind)
        else:  # iob2
            if prefix not in "BI":
                raise SchemeError(index, f"tag {tag!r} is not O, B-TYPE or I-TYPE (IOB2)")
            if prefix == "I" and previous[1] != kind:
                raise SchemeError(
                    index,
                    f"IOB2 tag {tag} follows {tags[index - 1] if index else 'nothing'} (an I- "
                    "tag must continue its own entity)",
                )
            out.append(tag)
        previous = (prefix, kind)
    if scheme == "bioes" and previous[0] in ("B", "I"):
        raise SchemeError(len(tags) - 1, f"BIOES entity not closed at the end of the sentence ({tags[-1]})")
    return out


def sentences_to_iob2(sentences: list[list[str]], scheme: str = "auto") -> tuple[str, list[list[str]]]:
    """(the scheme read, every sentence's tags as IOB2); `auto` detects the scheme from all sentences at once. A
    SchemeError names the sentence at fault in `.sentence` (its position in `sentences`), the tag in `.index` and the
    scheme read in `.scheme`."""
    if scheme == "auto":
        scheme = detect_scheme(sentences)
    converted = []
    for number, tags in enumerate(sentences):
        try:
            converted.append(to_iob2(tags, scheme))
        except SchemeError as err:
            err.sentence, err.scheme = number, scheme
            raise
    return scheme, converted
