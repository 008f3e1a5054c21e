"""Event handlers: call the engine and the figures, turn errors into messages. No layout here."""

from __future__ import annotations

import functools
import html
import logging
import re
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from rpln_core.errors import RplnError

from .registry import ModelRegistry

if TYPE_CHECKING:
    from rpln_core.capture import Trace

log = logging.getLogger("rpln_app")


@functools.cache
def import_engine() -> None:
    """Import the engine and the figures, which pull in torch and transformers (~5 s of start-up).

    Deferred to the first request (or a warm-up thread) so the app serves its page without waiting.
    """
    global analysis, answer, classify, fill_mask, attention, layernorm, tasks
    global InsideValues, empty_figure, inside_values, table_rows, outlier_ablation, parse_dims
    from rpln_core import analysis, answer, classify, fill_mask  # noqa: F401
    from rpln_core.ablation import outlier_ablation, parse_dims  # noqa: F401
    from viz import attention, layernorm, tasks  # noqa: F401

    from .inside import InsideValues, empty_figure, inside_values, table_rows  # noqa: F401


def importing_first(importer: Callable[[], None]) -> Callable[[Callable], Callable]:
    """A decorator that runs `importer` (a cached import function) before the decorated handler."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            importer()
            return fn(*args, **kwargs)

        return wrapper

    return decorate


# Import the engine before a handler runs (once; later calls cost a cache lookup).
needs_engine = importing_first(import_engine)


def user_errors(fn: Callable) -> Callable:
    """Show RplnError's message to the user; log anything else and show a short apology, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RplnError as error:
            raise gr.Error(toast_text(error.message), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - the app must keep serving whatever went wrong
            log.exception("request failed")
            raise gr.Error("Something went wrong while running the model; the app is still running.") from None

    return wrapper


def toast_text(message: str) -> str:
    """A message for gr.Error / gr.Warning, whose toast renders HTML: a typed model name must show as text."""
    return html.escape(message, quote=False)


def notices_markdown(notices: list[str]) -> str:
    return "\n".join(f"- {gr_escape(n)}" for n in notices)


def gr_escape(text: str) -> str:
    """Escape text for a Markdown component: no HTML, no Markdown syntax from user input."""
    # quote=False: an entity such as &#x27; would have its '#' escaped below and show up verbatim.
    return re.sub(r"([\\`*_{}\[\]()#+\-!|>~])", r"\\\1", html.escape(text, quote=False))


def inside_outputs(trace: Trace) -> list[Any]:
    """The inside-the-model panel's values in component order, adapted to Gradio components."""
    values: InsideValues = inside_values(trace)
    names, first = values.values["ln_choice"]
    values.values["ln_choice"] = gr.Dropdown(choices=names, value=first)
    if values.values["lens"] is None:
        values.values["lens"] = empty_figure("The logit lens needs a masked-LM checkpoint and a <mask> in the text.")
    sliders = [
        gr.Slider(minimum=0, maximum=trace.num_layers - 1, value=0, step=1),
        gr.Slider(minimum=0, maximum=trace.num_heads - 1, value=0, step=1),
    ]
    return sliders + values.ordered()


class Handlers:
    """The app's actions, bound to one model registry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    # --- task tabs: each returns task outputs, then the inside panel, then the trace for later events

    @needs_engine
    def fill_mask(self, model_name: str, text: str, top_k: float):
        result = fill_mask(self.registry.get(model_name), text, top_k=int(top_k))
        rows = [
            {"mask": m + 1, "rank": r + 1, "token": p.token_str, "score": p.score, "sequence": p.sequence}
            for m, row in enumerate(result.predictions)
            for r, p in enumerate(row)
        ]
        task = [notices_markdown(result.notices), table_rows(rows), tasks.fill_mask_figure(result, mask=None)]
        return task + inside_outputs(result.trace) + [result.trace]

    @needs_engine
    def classify(self, model_name: str, text: str, text_pair: str):
        result = classify(self.registry.get(model_name), text, text_pair or None)
        rows = [{"label": label.label, "score": label.score} for label in result.labels]
        task = [notices_markdown(result.notices), tasks.classification_figure(result), table_rows(rows)]
        return task + inside_outputs(result.trace) + [result.trace]

    @needs_engine
    def answer(self, model_name: str, question: str, context: str, top_k: float, impossible: bool):
        result = answer(
            self.registry.get(model_name), question, context, top_k=int(top_k), handle_impossible_answer=impossible
        )
        rows = [{"answer": a.answer, "score": a.score, "start": a.start, "end": a.end} for a in result.answers]
        notices = result.notices + ([f"The context was read in {result.windows} windows; the views show window "
                                     f"{result.window + 1}, which holds the best answer."] if result.windows > 1 else [])
        task = [
            notices_markdown(notices),
            tasks.qa_highlight_html(result, context),
            table_rows(rows),
            tasks.qa_logits_figure(result),
        ]
        return task + inside_outputs(result.trace) + [result.trace]

    # --- follow-up events on a stored trace: no model call. `trace` is typed Any on purpose: Gradio
    # resolves these hints at run time to find the SelectData parameter, and Trace is imported lazily.

    @staticmethod
    @needs_engine
    def head_view(trace: Any, layer: float, head: float):
        if trace is None:
            return None
        return attention.head_view(trace, int(layer), int(head))

    @staticmethod
    @needs_engine
    def model_view_click(trace: Any, evt: gr.SelectData):
        """Clicking a thumbnail moves the sliders to that layer and head (and so redraws the head view)."""
        cell = attention.model_view_cell(int(evt.index[0]), int(evt.index[1]), trace) if trace is not None else None
        if cell is None:
            return gr.Slider(), gr.Slider()
        return gr.Slider(value=cell[0]), gr.Slider(value=cell[1])

    @staticmethod
    @needs_engine
    def gamma_beta(trace: Any, name: str):
        if trace is None or not name:
            return None
        return layernorm.gamma_beta_figure(trace, name)

    @staticmethod
    def fill_in(text: str, evt: gr.SelectData, mask_token: str = "<mask>"):
        """Clicking a prediction puts its token in place of that mask in the text."""
        row = evt.row_value
        if not row or mask_token not in text:
            return text
        mask_number, token = int(row[0]), str(row[2])
        if not 1 <= mask_number <= text.count(mask_token):
            return text
        return _fill(text, mask_token, mask_number, token)

    # --- the model picker

    def pick_model(self, name: str, previous: str):
        """Load the chosen model now; if it cannot be loaded, say why and keep the previous one."""
        try:
            self.registry.get(name)
        except RplnError as error:
            gr.Warning(toast_text(f"{error.message} Keeping {previous}."))
            return previous, previous
        return name, name

    # --- JSON endpoints for gradio_client: the numbers behind the pictures

    @needs_engine
    def fill_mask_api(self, text: str, model: str, top_k: int = 5) -> dict:
        result = fill_mask(self.registry.get(model), text, top_k=int(top_k))
        return {"model": model, "predictions": result.to_pipeline(), **trace_summary(result.trace, result.notices)}

    @needs_engine
    def classify_api(self, text: str, model: str, text_pair: str = "") -> dict:
        result = classify(self.registry.get(model), text, text_pair or None)
        return {"model": model, "labels": result.to_pipeline(), **trace_summary(result.trace, result.notices)}

    @needs_engine
    def answer_api(self, question: str, context: str, model: str, top_k: int = 1) -> dict:
        result = answer(self.registry.get(model), question, context, top_k=int(top_k))
        answers = result.to_pipeline()
        return {"model": model, "answers": answers if isinstance(answers, list) else [answers],
                **trace_summary(result.trace, result.notices)}

    @needs_engine
    def ablate_api(self, text: str, model: str, dims: str = "", controls: int = 3, seed: int = 0) -> dict:
        """Kovaleva et al.'s experiment on this text: `dims` (empty: the model's shared outlier dimensions) switched
        off in every LayerNorm of the encoder, then as many random dimensions, against the intact model."""
        loaded = self.registry.get(model)
        return outlier_ablation(loaded, text, dims=parse_dims(dims), controls=controls, seed=seed).to_dict()


def _fill(text: str, mask_token: str, mask_number: int, token: str) -> str:
    """`text` with its `mask_number`-th (1-based) mask replaced by `token`, as the model would write it.

    RoBERTa's mask swallows the space before it and a predicted token carries its own leading space.
    """
    pieces = text.split(mask_token)
    head = mask_token.join(pieces[:mask_number]).rstrip(" ")
    tail = mask_token.join(pieces[mask_number:])
    return head + token + tail


def trace_summary(trace: Trace, notices: list[str]) -> dict:
    """What the JSON endpoints return besides the task result: tokens and per-layer statistics."""
    return {
        "tokens": trace.tokens.strings,
        "layers": analysis.summary_table(trace),
        "notices": list(notices),
    }
