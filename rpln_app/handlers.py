"""Event handlers: call the engine and the figures, turn errors into messages. No layout here."""

from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import logging
import re
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
import pandas as pd

from rpln_core.budgets import check_top_k
from rpln_core.checks import check_flag, whole_number
from rpln_core.errors import RplnError

from . import inputs as check
from .keys import DRAWN_ON_OPEN
from .notes import FailedRuns, failed_run_notice, qa_notices
from .registry import ModelRegistry
from .trace_store import TraceRecord, TraceStore

if TYPE_CHECKING:
    from rpln_core.capture import Trace

log = logging.getLogger("rpln_app")


@functools.cache
def import_engine() -> None:
    """Import the engine and the figures, which pull in torch and transformers (~5 s of start-up).

    Deferred to the first request (or a warm-up thread) so the app serves its page without waiting.
    """
    global analysis, answer, classify, fill_mask, tag, choose, generate, frames, attention, layernorm, tasks
    global InsideValues, empty_figure, inside_values, table_rows, outlier_ablation, parse_dims, visible_token
    global inside
    from rpln_core import analysis, answer, choose, classify, fill_mask, frames, generate, tag  # noqa: F401
    from rpln_core.ablation import outlier_ablation, parse_dims  # noqa: F401
    from viz import attention, layernorm, tasks  # noqa: F401
    from viz.text import visible_token  # noqa: F401

    from .inside import InsideValues, empty_figure, inside_values, table_rows  # noqa: F401
    from . import inside  # noqa: F401 - the bertviz views, the run's description and the charts' PNG names


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


def user_errors(fn: Callable, *, html: bool = True) -> Callable:
    """Show RplnError's message to the user; log anything else and show a short apology, never a traceback.

    `html`: the message goes to the browser's toast, which renders HTML, so it is escaped; gr.api endpoints pass
    False, as their callers (gradio_client, curl) read the message as plain text."""
    shown = toast_text if html else str
    if inspect.isgeneratorfunction(fn):
        return _streaming_user_errors(fn, html)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RplnError as error:
            raise gr.Error(shown(error.message), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - the app must keep serving whatever went wrong
            log.exception("request failed")
            raise gr.Error("Something went wrong while running the model; the app is still running.") from None

    return wrapper


_DONE = object()


def _streaming_user_errors(fn: Callable, html: bool) -> Callable:
    """user_errors for a generator handler (a stream): its errors come while it is iterated, so each step is guarded."""

    @functools.wraps(fn)
    def stream(*args, **kwargs):
        steps = fn(*args, **kwargs)
        step = user_errors(lambda: next(steps, _DONE), html=html)
        while (value := step()) is not _DONE:
            yield value

    return stream


def api_endpoint(fn: Callable, **defaults: Any) -> Callable:
    """`fn` as a gr.api endpoint: errors in plain text, and `defaults` as its parameters' defaults.

    gr.api publishes a signature's defaults and gradio_client fills them in for what a caller leaves out, so
    the app's start-up choices (which model, say) become the API's too.
    """
    wrapper = user_errors(fn, html=False)
    signature = inspect.signature(fn)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise TypeError(f"{fn.__name__} has no parameter {', '.join(sorted(unknown))}")
    parameters = [p.replace(default=defaults.get(p.name, p.default)) for p in signature.parameters.values()]
    wrapper.__signature__ = signature.replace(parameters=parameters)
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
    v = values.values
    # The LayerNorm tab's choice and table, drawn when it is opened: empty until then, with the table's own columns.
    v["ln_choice"] = gr.Dropdown(choices=[], value=None)
    v["ln_table"] = pd.DataFrame(columns=layernorm.STATS_COLUMNS)
    inside.name_png_downloads(v, trace)
    view = v["bertviz_view"]
    v["bertviz_view"] = gr.Radio(value=view)
    v["bertviz_layer"], v["bertviz_head"] = layer_head_sliders(trace, v["bertviz_layer"], v["bertviz_head"],
                                                               inside.bertviz_pickers(trace, view))
    v["bertviz_download"] = download_button(v["bertviz_download"], view)
    return layer_head_sliders(trace) + values.ordered()


def tab_outputs(trace: Trace, tab: str) -> list[Any]:
    """The views of one of the panel's DRAWN_ON_OPEN tabs, in component order, adapted to Gradio components."""
    values = inside.tab_values(trace, tab)
    if "ln_choice" in values:
        names, first = values["ln_choice"]
        values["ln_choice"] = gr.Dropdown(choices=names, value=first)
    if values.get("lens", False) is None:
        values["lens"] = empty_figure("The logit lens needs a masked-LM checkpoint and a <mask> in the text.")
    inside.name_png_downloads(values, trace)
    return [values[key] for key in DRAWN_ON_OPEN[tab]]


def event_values(values: list[Any]) -> Any:
    """An event's return for its outputs: Gradio takes an event with one output's value alone, not in a list."""
    return values[0] if len(values) == 1 else values


def described(record: TraceRecord, result: Any) -> TraceRecord:
    """`record` with what its run's downloads describe: task, model, inputs and `result` (rpln_app.inside.RunAbout)."""
    return dataclasses.replace(record, about=inside.RunAbout.of(record, result))


def task_chart(figure: Any, result: Any, chart: str) -> Any:
    """A task tab's result chart whose PNG download is named after `chart` and the input, not `newplot.png`."""
    return inside.png_named(figure, inside.chart_filename(result.trace, chart))


def layer_head_sliders(trace: Trace, layer: int = 0, head: int = 0, shown=(True, True)) -> list[gr.Slider]:
    """The (layer, head) sliders for `trace`'s model, on (`layer`, `head`); `shown`: whether each is visible."""
    return [
        gr.Slider(minimum=0, maximum=trace.num_layers - 1, value=layer, step=1, visible=shown[0]),
        gr.Slider(minimum=0, maximum=trace.num_heads - 1, value=head, step=1, visible=shown[1]),
    ]


def download_button(path: str | None, view: str) -> gr.DownloadButton:
    """The bertviz tab's download of the shown view (hidden when the view could not be drawn)."""
    label = inside.BERTVIZ_VIEWS[view].lower()
    return gr.DownloadButton(f"Download this {label} (HTML that works offline)", value=path, visible=path is not None)


# Shown when a re-drawing event finds no stored run, or ran the model again for it.
NO_RUN = "There is no run to draw this from: press the tab's button to run the model (again)."
RECOMPUTED = "This view was recomputed: its run had made way for newer ones, so the model ran again on the same input."


def engine_task(task: str) -> Callable:
    """The engine function of a task tab: (loaded model, **inputs) -> result with a `.trace` that keeps the
    queries and keys too, for bertviz's neuron view (rpln_app.inside.CAPTURE says why)."""
    run = {"fill-mask": fill_mask, "classification": classify, "qa": answer, "token-classification": tag,
           "multiple-choice": choose, "causal-lm": generate}[task]
    return functools.partial(run, options=inside.CAPTURE)


class Handlers:
    """The app's actions, bound to one model registry and one store of traces for re-drawing."""

    def __init__(self, registry: ModelRegistry, traces: TraceStore | None = None):
        self.registry = registry
        self.traces = TraceStore() if traces is None else traces
        # Keys of traces many sessions share (each tab's first results, rpln_app.arrivals): a visitor's next run
        # must not discard them from under the others.
        self.shared_keys: set[str] = set()
        self.failures = FailedRuns()

    def run_task(self, task: str, model: str, inputs: dict[str, Any], previous: Any = None) -> tuple[Any, TraceRecord]:
        """Run a task tab's engine call and keep its trace; the result and the record a session keeps of it (with
        what its downloads will describe).

        The `previous` record's trace (this tab's last run in this session) is dropped once the new run
        succeeds: nothing can draw from it any more, and a visitor clicking again and again should not push
        other visitors' traces out."""
        result = engine_task(task)(self.registry.for_task(model, task), **inputs)
        return result, described(self.keep(result.trace, task, model, inputs, previous), result)

    def keep(self, trace: Any, task: str, model: str, inputs: dict[str, Any], previous: Any = None) -> TraceRecord:
        """Store what a run's views draw from (`trace`) and return its record, dropping the `previous` record's."""
        if isinstance(previous, TraceRecord) and previous.key not in self.shared_keys:
            self.traces.discard(previous.key)
        return TraceRecord(self.traces.put(trace), task, model, inputs)

    def trace_of(self, record: TraceRecord | None) -> Trace | None:
        """The trace `record` names: from the store, else by running its task again (and saying so)."""
        if not isinstance(record, TraceRecord):  # no run yet, or Gradio let this session's state go
            gr.Info(NO_RUN)
            return None
        return self.stored(record)

    def stored(self, record: TraceRecord, kept_of: Callable[[Any], Any] = lambda result: result.trace) -> Any:
        """What `record`'s run left in the store; if it was evicted, the run again (`kept_of` its result: what the
        store keeps), kept under the same key, and a notice that it was recomputed."""
        kept = self.traces.get(record.key)
        if kept is None:
            kept = kept_of(engine_task(record.task)(self.registry.get(record.model), **record.inputs))
            self.traces.put(kept, record.key)
            gr.Info(RECOMPUTED)
        return kept

    # --- task tabs: each returns task outputs, then the inside panel, then the record for later events.
    # `previous` is the tab's record from this session's last run.

    @needs_engine
    def fill_mask(self, model_name: str, text: str, top_k: float, previous: Any = None, request: gr.Request = None):
        with self.failures.noting(session(request), "fill-mask"):
            inputs = {"text": check.text(text, "text"), "top_k": check_top_k(top_k, "Top k")}
            result, record = self.run_task("fill-mask", model_name, inputs, previous)
        table = frames.predictions_frame(result)
        # masks numbered from 1, as the chart numbers them; a bare-space prediction shows as ␣, not an empty cell
        table = table.assign(mask=table["mask"] + 1, token=table["token_str"].map(visible_token))
        task = [notices_markdown(result.notices), table_rows(table[["mask", "rank", "token", "score", "sequence"]]),
                task_chart(tasks.fill_mask_figure(result, mask=None), result, "scores")]
        return task + inside_outputs(result.trace) + [record]

    @needs_engine
    def classify(self, model_name: str, text: str, text_pair: str, previous: Any = None, request: gr.Request = None):
        with self.failures.noting(session(request), "classification"):
            inputs = {"text": check.text(text, "text"), "text_pair": check.optional_text(text_pair, "second text")}
            result, record = self.run_task("classification", model_name, inputs, previous)
        task = [notices_markdown(result.notices), task_chart(tasks.classification_figure(result), result, "labels"),
                table_rows(frames.labels_frame(result)[["label", "score"]])]
        return task + inside_outputs(result.trace) + [record]

    @needs_engine
    def answer(self, model_name: str, question: str, context: str, top_k: float, impossible: bool,
               previous: Any = None, request: gr.Request = None):
        with self.failures.noting(session(request), "qa"):
            inputs = {
                "question": check.text(question, "question"),
                "context": check.text(context, "context"),
                "top_k": check_top_k(top_k, "Answers"),
                "handle_impossible_answer": check_flag(impossible, "Allow 'no answer'"),
            }
            result, record = self.run_task("qa", model_name, inputs, previous)
        table = frames.answers_frame(result)
        table.loc[table["start_token"] < 0, "answer"] = "(no answer)"  # the pipeline's null answer is ""
        task = [
            notices_markdown(qa_notices(result, record.model, inputs["handle_impossible_answer"])),
            tasks.qa_highlight_html(result, context),
            table_rows(table[["answer", "score", "start", "end"]]),
            task_chart(tasks.qa_logits_figure(result), result, "qa-logits"),
        ]
        return task + inside_outputs(result.trace) + [record]

    def run_failed(self, task: str, record: Any, request: gr.Request = None) -> str:
        """The tab's notice after its run failed: why (as the failing run noted it), and that the results still
        shown are the previous run's, named by model and text."""
        why, *previous = failed_run_notice(self.failures.take(session(request), task), record)
        return "\n\n".join([f"**Not run:** {gr_escape(why)}", *(f"*{gr_escape(p)}*" for p in previous)])

    # --- follow-up events on a run's record: the stored trace, or the run again if it was evicted. `record` is
    # typed Any on purpose: Gradio resolves these hints at run time to find the SelectData parameter.

    @needs_engine
    def attention_views(self, record: Any, layer: float, head: float):
        """The head view of (`layer`, `head`), and the model view with that head framed, as its caption says."""
        trace = self.trace_of(record)
        if trace is None:
            return gr.skip(), gr.skip()
        layer = whole_number(layer, "Layer", 0, trace.num_layers - 1)
        head = whole_number(head, "Head", 0, trace.num_heads - 1)
        head_view = inside.png_named(attention.head_view(trace, layer, head), inside.chart_filename(trace, "head_view"))
        return head_view, inside.model_view_png(trace, (layer, head))

    @needs_engine
    def bertviz_view(self, record: Any, view: str, layer: float, head: float):
        """bertviz's `view` ("head", "model", "neuron") on (`layer`, `head`) where it takes them: the page, its
        download, and the (layer, head) pickers shown where the view takes them."""
        trace = self.trace_of(record)
        if trace is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        layer = whole_number(layer, "Layer", 0, trace.num_layers - 1)
        head = whole_number(head, "Head", 0, trace.num_heads - 1)
        directory = inside.fresh_export_directory(inside.EXPORT_ROOT)
        page, path = inside.bertviz_values(trace, view, layer, head, directory, record.about)
        sliders = layer_head_sliders(trace, layer, head, inside.bertviz_pickers(trace, view))
        return page, download_button(path, view), *sliders

    def bertviz_if_open(self, record: Any, open_tab: str, view: str, layer: float, head: float):
        """After a run: bertviz_view if the visitor has bertviz's tab open (a closed tab draws when it opens)."""
        if open_tab != "bertviz":
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self.bertviz_view(record, view, layer, head)

    @needs_engine
    def exports(self, record: Any):
        """The Export tab's files for the run: its statistics as CSV and JSON, with the input, settings and result."""
        trace = self.trace_of(record)
        if trace is None:
            return gr.skip()
        return inside.write_downloads(trace, inside.fresh_export_directory(inside.EXPORT_ROOT), record.about)

    @needs_engine
    def tab_views(self, record: Any, tab: str):
        """The views of the panel's `tab` (one of DRAWN_ON_OPEN) for the run, drawn as the tab is opened."""
        trace = self.trace_of(record)
        return event_values([gr.skip()] * len(DRAWN_ON_OPEN[tab]) if trace is None else tab_outputs(trace, tab))

    def tab_views_if_open(self, record: Any, open_tab: str, tab: str):
        """After a run: tab_views if the visitor has that tab open (a closed tab draws when it opens)."""
        return self.tab_views(record, tab) if open_tab == tab else event_values([gr.skip()] * len(DRAWN_ON_OPEN[tab]))

    def exports_if_open(self, record: Any, open_tab: str):
        """After a run: exports if the visitor has the Export tab open (a closed tab writes them when it opens)."""
        return self.exports(record) if open_tab == "export" else gr.skip()

    def open_tab_after_run(self, record: Any, open_tab: str, view: str, layer: float, head: float) -> list:
        """After a run, in one event: the views of the panel tab that is open, bertviz's (its page, download and
        pickers), the Export tab's files, then each DRAWN_ON_OPEN tab's views in order; the closed ones skip."""
        values = [*self.bertviz_if_open(record, open_tab, view, layer, head), self.exports_if_open(record, open_tab)]
        for tab, keys in DRAWN_ON_OPEN.items():
            drawn = self.tab_views_if_open(record, open_tab, tab)
            values += [drawn] if len(keys) == 1 else drawn
        return values

    @needs_engine
    def model_view_click(self, record: Any, evt: gr.SelectData):
        """Clicking a thumbnail moves the sliders to that layer and head (and so redraws the head view)."""
        unchanged = gr.Slider(), gr.Slider()
        try:
            x, y = (int(value) for value in evt.index)
        except (TypeError, ValueError):  # not an image click's [x, y]: a hand-made request
            return unchanged
        trace = self.trace_of(record)
        cell = attention.model_view_cell(x, y, trace) if trace is not None else None
        if cell is None:
            return unchanged
        return gr.Slider(value=cell[0]), gr.Slider(value=cell[1])

    @needs_engine
    def gamma_beta(self, record: Any, name: str):
        if not name:
            return None
        name = check.text(name, "LayerNorm")
        trace = self.trace_of(record)
        if trace is None:
            return gr.skip()
        if name not in {stats.name for stats in trace.layernorms}:
            raise RplnError(f"This run has no LayerNorm called {name!r}.")
        return inside.png_named(layernorm.gamma_beta_figure(trace, name), inside.chart_filename(trace, "gamma_beta"))

    @staticmethod
    def fill_in(text: str, evt: gr.SelectData, mask_token: str = "<mask>"):
        """Clicking a prediction puts its token in place of that mask in the text."""
        row = evt.row_value
        if not isinstance(text, str) or not isinstance(row, list) or len(row) < 3 or mask_token not in text:
            return text
        try:
            mask_number, token = int(row[0]), str(row[2])
        except (TypeError, ValueError):
            return text
        if not 1 <= mask_number <= text.count(mask_token):
            return text
        return _fill(text, mask_token, mask_number, token)

    # --- the model picker

    def pick_model(self, name: str, previous: str, task: str | None = None):
        """Load the chosen model now; if it cannot be loaded, or lacks `task`'s head (a task tab's picker), say why
        and keep the previous one."""
        try:
            self.registry.for_task(name, task) if task else self.registry.get(name)
        except RplnError as error:
            gr.Warning(toast_text(f"{error.message} Keeping {previous}."))
            return previous, previous
        return name, name

    # --- JSON endpoints for gradio_client: the numbers behind the pictures. app.py gives `model` the UI's
    # default; nothing is stored, as API callers do not re-draw.

    @needs_engine
    def fill_mask_api(self, text: str, model: str, top_k: int = 5) -> dict:
        text, top_k = check.text(text, "text"), check_top_k(top_k, "top_k")
        result = fill_mask(self.registry.for_task(model, "fill-mask", api=True), text, top_k=top_k)
        return {"model": model, "predictions": result.to_pipeline(), **trace_summary(result.trace, result.notices)}

    @needs_engine
    def classify_api(self, text: str, model: str, text_pair: str = "") -> dict:
        text, text_pair = check.text(text, "text"), check.optional_text(text_pair, "text_pair")
        result = classify(self.registry.for_task(model, "classification", api=True), text, text_pair)
        return {"model": model, "labels": result.to_pipeline(), **trace_summary(result.trace, result.notices)}

    @needs_engine
    def answer_api(self, question: str, context: str, model: str, top_k: int = 1) -> dict:
        question, context = check.text(question, "question"), check.text(context, "context")
        result = answer(self.registry.for_task(model, "qa", api=True), question, context,
                        top_k=check_top_k(top_k, "top_k"))
        answers = result.to_pipeline()
        return {"model": model, "answers": answers if isinstance(answers, list) else [answers],
                **trace_summary(result.trace, result.notices)}

    @needs_engine
    def ablate_api(self, text: str, model: str, dims: str = "", controls: int = 3, seed: int = 0) -> dict:
        """Kovaleva et al.'s experiment on this text: `dims` (empty: the model's shared outlier dimensions) switched
        off in every LayerNorm of the encoder, then as many random dimensions, against the intact model."""
        text, dims = check.text(text, "text"), parse_dims(check.optional_text(dims, "dims") or "")
        loaded = self.registry.get(model)
        return outlier_ablation(loaded, text, dims=dims, controls=controls, seed=seed).to_dict()


def _fill(text: str, mask_token: str, mask_number: int, token: str) -> str:
    """`text` with its `mask_number`-th (1-based) mask replaced by `token`, as the model would write it.

    RoBERTa's mask swallows the space before it and a predicted token carries its own leading space.
    """
    pieces = text.split(mask_token)
    head = mask_token.join(pieces[:mask_number]).rstrip(" ")
    tail = mask_token.join(pieces[mask_number:])
    return head + token + tail


def session(request: gr.Request | None) -> str | None:
    """The visitor's session id; None when a handler is called in-process."""
    return getattr(request, "session_hash", None)


def trace_summary(trace: Trace, notices: list[str]) -> dict:
    """What the JSON endpoints return besides the task result: tokens and per-layer statistics."""
    return {
        "tokens": trace.tokens.strings,
        "layers": analysis.summary_table(trace),
        "notices": list(notices),
    }
