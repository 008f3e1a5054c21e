"""Tokens line up with the characters the user typed, whatever the script."""

import pytest

from rpln_core import RplnError
from rpln_core.tokens import encode, readable

ODD_TEXTS = [
    "Emoji 😀 and 👩‍👩‍👧 families.",
    "Arabic مرحبا بالعالم and Hebrew שלום inside English.",
    "zero\u200bwidth and soft\u00adhyphen",
    "tab\tnewline\ncarriage\rbell\x07end",
    "Ünïcödé ﬁ ligature and 𝔘𝔫𝔦",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_offsets_of_every_text_token_point_into_the_text(tokenizer, text):
    tokens = encode(tokenizer, text, max_tokens=500).tokens
    previous_end = 0
    covered = set()
    for start, end, special in zip(*zip(*tokens.offsets), tokens.special):
        if special:
            continue
        assert 0 <= start <= end <= len(text)
        assert start >= previous_end or start == previous_end - (end - start)  # byte pieces of one char share it
        previous_end = max(previous_end, end)
        covered.update(range(start, end))
    # Every non-space character belongs to some token.
    assert {i for i, c in enumerate(text) if not c.isspace()} <= covered


def test_token_strings_are_what_the_reader_typed(tokenizer):
    tokens = encode(tokenizer, "The cat sat.", max_tokens=64).tokens
    assert tokens.strings == ["<s>", "The", "cat", "sat", ".", "</s>"]
    assert tokens.special == [True, False, False, False, False, True]


def test_invisible_characters_are_named_not_hidden():
    assert readable("a\u200bb") == "a<U+200B>b"
    assert readable("\x07") == "<U+0007>"
    assert readable("") == "␣"
    assert readable("word") == "word"


def test_pairs_record_which_text_each_token_came_from(tokenizer):
    tokens = encode(tokenizer, "first text", "second", max_tokens=64).tokens
    assert tokens.segments[0] is None and tokens.segments[-1] is None
    second = [s for s, seg in zip(tokens.strings, tokens.segments) if seg == 1]
    assert "".join(second) == "second"


def test_empty_text_is_refused(tokenizer):
    with pytest.raises(RplnError, match="empty"):
        encode(tokenizer, " \n ", max_tokens=64)
