"""Text that reaches a figure: escaped, because plotly renders a subset of HTML tags in labels and hovers,
and visible, because a token made only of whitespace would otherwise show as an empty label."""

from __future__ import annotations

import html

from rpln_core.capture import Trace
from rpln_core.tokens import readable

# A sign for each whitespace character a tokenizer emits as a token of its own (RoBERTa's "Ġ", "Ċ", "ĉ").
WHITESPACE_SIGNS = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def plot_label(s: str) -> str:
    """`s` safe for plotly text, ticks and hovers: `<`, `>` and `&` escaped, so tags show as typed.

    Quotes are left alone: plotly decodes only a few named entities (not `&quot;`), and without a `<`
    no tag, hence no attribute, can form.
    """
    return html.escape(str(s), quote=False)


def visible_token(s: str) -> str:
    """A token string as a reader should see it, not escaped (for tables): a whitespace-only token spelled with
    signs (" " → "␣", "\n" → "⏎", "\t" → "⇥", "  " → "␣␣", "" → "␣"), any other with its invisible
    characters named by `rpln_core.tokens.readable`. Leading spaces of word tokens (" Paris") are kept."""
    if s and s.isspace():
        return "".join(WHITESPACE_SIGNS.get(char, f"<U+{ord(char):04X}>") for char in s)
    return readable(s)


def token_label(s: str) -> str:
    """A tokenizer string (e.g. from `decode`) visible and escaped, for figures: `plot_label(visible_token(s))`."""
    return plot_label(visible_token(s))


def token_labels(trace: Trace) -> list[str]:
    """Visible, escaped token strings prefixed by their index ("0·<s>", "1·The"), unique, so usable as categories."""
    return [f"{index}·{token_label(text)}" for index, text in enumerate(trace.tokens.strings)]
