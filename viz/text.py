"""Text that reaches a figure: escaped, because plotly renders a subset of HTML tags in labels and hovers."""

from __future__ import annotations

import html

from rpln_core.capture import Trace
from rpln_core.tokens import readable


def plot_label(s: str) -> str:
    """`s` safe for plotly text, ticks and hovers: `<`, `>` and `&` escaped, so tags show as typed.

    Quotes are left alone: plotly decodes only a few named entities (not `&quot;`), and without a `<`
    no tag, hence no attribute, can form.
    """
    return html.escape(str(s), quote=False)


def token_label(s: str) -> str:
    """A tokenizer string (e.g. from `decode`) readable and escaped: invisible characters named, tags shown."""
    return plot_label(readable(s))


def token_labels(trace: Trace) -> list[str]:
    """Escaped token strings prefixed by their index ("0·<s>", "1·The"), unique so they can be axis categories."""
    return [f"{index}·{plot_label(text)}" for index, text in enumerate(trace.tokens.strings)]
