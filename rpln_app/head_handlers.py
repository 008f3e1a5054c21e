"""Event handlers of the token classification, multiple choice and generation tabs, and their API endpoints.

`HeadHandlers` is the app's `Handlers` with these tabs' actions added: every tab shares the one instance, so one
trace store and one set of shared first results serve them all. A multiple-choice run keeps the traces of all its
choices under one store entry (one entry per run, as for the other tabs, and the store counts all their bytes);
its record says which choice the inside views show. Generation streams: its handler is a generator that yields
the text and the candidates as each token comes, then every view once the whole sequence is traced.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Iterable

import gradio as gr

from rpln_core import budgets
from rpln_core.checks import whole_number
from rpln_core.errors import RplnError

from . import inputs as check
from .handlers import (
    NO_RUN,
    Handlers,
    described,
    engine_task,
    import_engine,
    importing_first,
    inside_outputs,
    notices_markdown,
    session,
    trace_summary,
)
from .keys import INSIDE_KEYS
from .pickers import CLASS_SUFFIXES, HEAD_WORDS, model_facts, picker_choices
from .settings import Settings
from .trace_store import TraceRecord

if TYPE_CHECKING:
    from rpln_core.capture import Trace

# rpln_core.tasks.tag.AGGREGATION_STRATEGIES, repeated so that the page lays out without importing torch (a test
# checks that the two agree).
AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
# The pages' starting settings, which are the API endpoints' defaults too. "none", the pipeline's default: a label
# per token. The word strategies would also join neighbouring words of one tag, which reads wrong for part-of-speech
# tags (labels without B-/I-): "walked slowly" as one VBD.
TAG_STRATEGY = "none"
GENERATION = dict(max_new_tokens=20, do_sample=False, temperature=1.0, top_k=50, top_p=1.0, seed=0)
CANDIDATES = 5  # the model's most probable next tokens listed at each step
INSIDE_COUNT = 2 + len(INSIDE_KEYS)  # the inside panel's outputs: the layer and head sliders, then its views


@functools.cache
def import_heads() -> None:
    """Import the engine, the figures and what these tabs add (deferred like rpln_app.handlers.import_engine)."""
    global frames, generate_steps, differing_positions, heads, inside, table_rows
    import_engine()
    from rpln_core import frames  # noqa: F401
    from rpln_core.tasks.choice import differing_positions  # noqa: F401
    from rpln_core.tasks.generate import generate_steps  # noqa: F401
    from viz import heads  # noqa: F401

    from . import inside  # noqa: F401
    from .inside import table_rows  # noqa: F401


needs_heads = importing_first(import_heads)


def starting_model(settings: Settings, task: str) -> str | None:
    """The model a head tab (and its endpoint) starts with: the settings' default if it has the tab's head, else the
    first listed model that has it; None when no listed model has (the tab then says so)."""
    listed = [name for _, name in picker_choices(settings.models, task)]
    default = settings.defaults.get(task)
    if default in listed or (default and not settings.public and model_facts(default).head == task):
        return default
    return listed[0] if listed else None


def no_model_message(task: str) -> str:
    """What a head tab says when the app has no model with its head (Markdown, no user text)."""
    suffix = next(suffix for suffix, head in CLASS_SUFFIXES.items() if head == task)
    return (
        f"**This app has no model with {HEAD_WORDS[task]} head**, so this tab has nothing to run. It runs any "
        f"RoBERTa or RoBERTa-PreLayerNorm checkpoint saved with that head (`…{suffix}`): start the app with one, "
        "e.g. `python app.py --models /path/to/checkpoint` (or `RPLN_MODELS=…`)."
    )


@dataclasses.dataclass(frozen=True)
class ChoiceRecord(TraceRecord):
    """A multiple-choice run's record: its store entry holds every choice's trace, in the order given."""

    shown: int = 0  # the choice whose trace the inside views draw (0-based)


def choice_lines(text: Any) -> list[str]:
    """The choices box's lines, blank ones left out: 2 to budgets.max_choices of them, or a message naming the box."""
    lines = [line.strip() for line in check.text(text, "choices").splitlines() if line.strip()]
    most = budgets.current().max_choices
    if not 2 <= len(lines) <= most:
        raise RplnError(f"Choices: write 2 to {most} of them, one per line; got {len(lines)}.")
    return lines


def last(stream: Iterable) -> Any:
    """The last value a stream yields (a generator handler run to its end, as a tab's first results need)."""
    return collections.deque(stream, maxlen=1).pop()


class HeadHandlers(Handlers):
    """The app's handlers, with those of the token classification, multiple choice and generation tabs."""

    def trace_of(self, record: TraceRecord | None) -> Trace | None:
        if isinstance(record, ChoiceRecord):
            return self.choice_traces(record)[record.shown]
        return super().trace_of(record)

    def choice_traces(self, record: ChoiceRecord) -> list[Trace]:
        """Every choice's trace of a multiple-choice run: from the store, else by running it again (and saying so)."""
        return self.stored(record, lambda result: result.traces)

    # --- the tabs' runs: task outputs, then the inside panel, then the record (as in Handlers)

    @needs_heads
    def tag(self, model_name: str, text: str, aggregation_strategy: str, previous: Any = None,
            request: gr.Request = None):
        task = "token-classification"
        with self.failures.noting(session(request), task):
            inputs = {"text": check.text(text, "text"),
                      "aggregation_strategy": check.text(aggregation_strategy, "aggregation strategy")}
            result, record = self.run_task(task, model_name, inputs, previous)
        notices = list(result.notices)
        if not result.entities:
            notices.append("Every token got the label O (outside any entity): nothing is marked. The chart shows "
                           "each token's scores.")
        # The pipeline's `word` spells a token as the vocabulary does ("Ġcat"); a reader wants the text it covers.
        table = frames.entities_frame(result).rename(columns={"word": "text"})
        table["text"] = [result.text[start:end] for start, end in zip(table["start"], table["end"])]
        outputs = [notices_markdown(notices), heads.tag_spans(result), table_rows(table),
                   heads.token_scores_figure(result)]
        return outputs + inside_outputs(result.trace) + [record]

    @needs_heads
    def choose(self, model_name: str, context: str, choices: str, previous: Any = None, request: gr.Request = None):
        task = "multiple-choice"
        with self.failures.noting(session(request), task):
            inputs = {"context": check.text(context, "context"), "choices": choice_lines(choices)}
            result = engine_task(task)(self.registry.for_task(model_name, task), **inputs)
            kept = self.keep(result.traces, task, model_name, inputs, previous)
        record = described(ChoiceRecord(kept.key, kept.task, kept.model, kept.inputs, shown=result.best), result)
        table = frames.choices_frame(result)
        table["index"] += 1  # numbered from 1, as the chart and the picker below number them
        picker = gr.Radio(choices=[(heads.shorten(f"{n}: {c.choice}", 60), n - 1)
                                   for n, c in enumerate(result.choices, start=1)], value=result.best)
        outputs = [notices_markdown(result.notices), heads.choice_figure(result),
                   table_rows(table.rename(columns={"index": "#"})), picker]
        return outputs + self._choice_views(record, result.traces) + [record]

    @needs_heads
    def show_choice(self, record: Any, choice: Any):
        """The inside views (and the differing tokens) of another choice of the same run."""
        if not isinstance(record, ChoiceRecord):
            gr.Info(NO_RUN)
            return [gr.skip()] * (1 + INSIDE_COUNT + 1)
        traces = self.choice_traces(record)
        record = dataclasses.replace(record, shown=whole_number(choice, "Choice", 0, len(traces) - 1))
        return self._choice_views(record, traces) + [record]

    def _choice_views(self, record: ChoiceRecord, traces: list[Trace]) -> list:
        """The shown choice's input with its differing tokens marked, then the inside panel of its pass."""
        differing = differing_positions([trace.tokens.ids for trace in traces])[record.shown]
        texts = (record.inputs["context"], record.inputs["choices"][record.shown])
        spans = heads.differing_spans(traces[record.shown], differing, texts)
        return [spans] + inside_outputs(traces[record.shown])

    def generate(self, model_name: str, prompt: str, max_new_tokens: float, do_sample: bool, temperature: float,
                 top_k: float, top_p: float, seed: float, previous: Any = None, request: gr.Request = None):
        """A stream: the text, candidates table and chart after each token; then every view and the record.

        A generator, so not wrapped by needs_heads (which would make it a plain function to Gradio)."""
        import_heads()
        task = "causal-lm"
        waiting = [gr.skip()] * (2 + INSIDE_COUNT + 1)  # the lens step, the lens, the panel and the record
        with self.failures.noting(session(request), task):
            prompt = check.text(prompt, "prompt")
            inputs = dict(prompt=prompt, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed, candidates=CANDIDATES)
            run = generate_steps(self.registry.for_task(model_name, task), **inputs)  # checks every setting first
            # As the engine read them (a slider's 20.0 is 20): running these again gives the same trace.
            inputs.update(dataclasses.asdict(run.sampling), max_new_tokens=int(max_new_tokens))
            for step in run:  # the notices clear as the first token comes: they will be this run's
                yield ["", *self._generated(prompt, step.text, run.steps)] + waiting
            result = run.result(options=inside.CAPTURE)
            record = described(self.keep(result.trace, task, model_name, inputs, previous), result)
        steps = len(result.steps)  # a slider's ends must differ: one step leaves it still
        lens_step = gr.Slider(minimum=1, maximum=max(2, steps), value=1, step=1, interactive=steps > 1)
        yield ([notices_markdown(result.notices + stop_notices(result)),
                *self._generated(prompt, result.text, result.steps), lens_step,
                inside.png_named(heads.step_lens_figure(result.trace, 0), inside.chart_filename(result.trace, "lens"))]
               + inside_outputs(result.trace) + [record])

    @staticmethod
    def _generated(prompt: str, text: str, steps: list) -> list:
        """The text so far, the candidates chart and the steps table."""
        return [heads.generation_spans(prompt, text), heads.candidates_figure(steps),
                table_rows(heads.step_rows(steps))]

    @needs_heads
    def step_lens(self, record: Any, step: float):
        """The logit lens at the `step`-th generated token (from 1) of the run."""
        trace = self.trace_of(record)
        if trace is None:
            return gr.skip()
        if trace.logit_lens is None:
            raise RplnError("This run has no logit lens to show.")
        step = whole_number(step, "Step", 1, len(trace.logit_lens.positions))
        return inside.png_named(heads.step_lens_figure(trace, step - 1), inside.chart_filename(trace, "lens"))

    # --- JSON endpoints for gradio_client: app.py gives `model` the tab's starting model; nothing is stored.

    def api_model(self, model: Any, task: str):
        if isinstance(model, str) and not model.strip():
            raise RplnError(f"model is empty: name a model with {HEAD_WORDS[task]} head.")
        return self.registry.for_task(model, task, api=True)

    @needs_heads
    def tag_api(self, text: str, model: str, aggregation_strategy: str = TAG_STRATEGY) -> dict:
        """Every entity as pipeline("token-classification") gives it, and every token's most probable label."""
        text = check.text(text, "text")
        loaded = self.api_model(model, "token-classification")
        result = engine_task("token-classification")(loaded, text, aggregation_strategy=aggregation_strategy)
        return {"model": model, "entities": result.to_pipeline(), "labels": result.labels,
                "token_labels": result.token_labels, "token_scores": result.token_scores.tolist(),
                **trace_summary(result.trace, result.notices)}

    @needs_heads
    def choose_api(self, context: str, choices: list[str], model: str) -> dict:
        """Each choice's score and logit in the order given, the best one's index, each choice's tokens and which
        of them not every choice shares; `tokens` and `layers` are the best choice's pass."""
        context = check.text(context, "context")
        result = engine_task("multiple-choice")(self.api_model(model, "multiple-choice"), context, choices)
        return {"model": model, "choices": result.to_dicts(), "best": result.best,
                "choice_tokens": [trace.tokens.strings for trace in result.traces], "differing": result.differing,
                **trace_summary(result.trace, result.notices)}

    @needs_heads
    def generate_api(self, prompt: str, model: str, max_new_tokens: int = GENERATION["max_new_tokens"],
                     do_sample: bool = GENERATION["do_sample"], temperature: float = GENERATION["temperature"],
                     top_k: int = GENERATION["top_k"], top_p: float = GENERATION["top_p"],
                     seed: int = GENERATION["seed"], candidates: int = CANDIDATES) -> dict:
        """The continuation of `prompt` (`text`, without the prompt), why it stopped, and every step's token and
        candidates with the model's own probabilities (before temperature, top-k and top-p)."""
        prompt = check.text(prompt, "prompt")
        result = engine_task("causal-lm")(
            self.api_model(model, "causal-lm"), prompt, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, candidates=candidates)
        steps = [dataclasses.asdict(step) for step in result.steps]
        return {"model": model, "prompt": prompt, "text": result.text, "stopped_by": result.stopped_by,
                "steps": steps, **trace_summary(result.trace, result.notices)}


# Why a generation stopped, in words; the engine's own notice says it when the model ran out of positions.
STOPPED_BY = {
    "eos": "The model ended the text (</s>) after {n} tokens.",
    "max_new_tokens": "Stopped after {n} tokens: the most this run asked for.",
}


def stop_notices(result: Any) -> list[str]:
    stopped = STOPPED_BY.get(result.stopped_by)
    return [stopped.format(n=len(result.steps))] if stopped else []
