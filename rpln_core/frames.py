"""A trace and a task result as tidy pandas DataFrames, in the trace vocabulary: one row per observation.

`trace_frames(trace)` gives "tokens", "layers", "layernorms" and "residual"; "attention" (layers · heads · tokens²
rows) and "queries" / "keys" (layers · tokens · hidden rows) only when asked. `result_frame(result)` gives the
predictions of fill_mask, the labels of classify, the answers of answer, the entities of tag, the choices of choose
or the steps of generate, with the pipelines' field names where a pipeline exists.
Layers count from 0 (`layer` l is `blocks.{l}`), positions index `trace.tokens`. Values are the trace's own:
statistics float32, attention weights, queries and keys their stored values widened to float32.

Long frames repeat each token's text on many rows, so their `token` columns are categoricals: a row holds a
small code, and `frame.token == "<s>"` still reads as usual.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from torch import Tensor

from . import analysis
from .capture import Trace
from .errors import RplnError
from .tasks.choice import ChoiceResult
from .tasks.classify import ClassificationResult
from .tasks.fill_mask import FillMaskResult
from .tasks.generate import GenerationResult
from .tasks.qa import QAResult
from .tasks.tag import TagResult

# Where each norm of the "residual" frame is taken, in the order a layer computes them: the stream entering the
# layer, what attention adds, the stream between the branches, what the feed-forward adds, the layer's output.
RESIDUAL_POINTS = ("resid_pre", "attn_out", "resid_mid", "ffn_out", "resid_post")


def trace_frames(trace: Trace, *, attention: bool = False, queries_and_keys: bool = False) -> dict[str, pd.DataFrame]:
    """The trace's frames by name; "attention" and "queries" / "keys" only when asked, as they are large."""
    frames = {
        "tokens": tokens_frame(trace),
        "layers": layers_frame(trace),
        "layernorms": layernorms_frame(trace),
        "residual": residual_frame(trace),
    }
    if attention:
        frames["attention"] = attention_frame(trace)
    if queries_and_keys:
        frames["queries"] = queries_frame(trace)
        frames["keys"] = keys_frame(trace)
    return frames


def tokens_frame(trace: Trace) -> pd.DataFrame:
    """One row per token: position, token (its readable text), id, special, segment (<NA> for specials), start, end
    (character offsets into its segment's text)."""
    tokens = trace.tokens
    starts, ends = zip(*tokens.offsets) if len(tokens) else ((), ())
    return pd.DataFrame(
        {
            "position": np.arange(len(tokens)),
            "token": pd.array(tokens.strings, dtype="str"),
            "id": np.array(tokens.ids, dtype=np.int64),
            "special": np.array(tokens.special, dtype=bool),
            "segment": pd.array(tokens.segments, dtype="Int64"),
            "start": np.array(starts, dtype=np.int64),
            "end": np.array(ends, dtype=np.int64),
        }
    )


def layers_frame(trace: Trace) -> pd.DataFrame:
    """One row per layer: analysis.summary_table's token means (norms, ratios, entropy, sink shares, massive
    activations)."""
    return pd.DataFrame(analysis.summary_table(trace))


def layernorms_frame(trace: Trace) -> pd.DataFrame:
    """One row per LayerNorm and token position it normalised, in the order they ran: name, module, layer (<NA>
    outside the layers), placement, position, token, and the input's mean, std, scale (1/σ) and max_abs.

    The MLM head's LayerNorm (`lm_head.ln`) only reads the masked positions, so it has a row per mask."""
    parts = [
        pd.DataFrame(
            {
                "name": stats.name,
                "module": stats.module,
                "layer": pd.array([stats.layer] * len(stats.positions), dtype="Int64"),
                "placement": stats.placement,
                "position": np.array(stats.positions, dtype=np.int64),
                "mean": _numpy(stats.mean),
                "std": _numpy(stats.std),
                "scale": _numpy(stats.scale),
                "max_abs": _numpy(stats.max_abs),
            }
        )
        for stats in trace.layernorms
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(frame.columns.get_loc("position") + 1, "token", _token_column(trace, frame["position"].to_numpy()))
    return frame


def residual_frame(trace: Trace) -> pd.DataFrame:
    """Long form of the per-token norms: layer, stream (resid_pre, attn_out, resid_mid, ffn_out, resid_post: an
    ordered categorical, in the order the layer computes them), position, token, norm (L2, float32).

    attn_out and ffn_out are the norms of what each branch adds to the stream; the others are points of the stream."""
    norms = np.stack([_numpy(getattr(trace, f"{point}_norm")) for point in RESIDUAL_POINTS], axis=1)
    layer, stream, position = _grid(norms.shape)  # norms: [layers, points, tokens]
    return pd.DataFrame(
        {
            "layer": layer,
            "stream": pd.Categorical.from_codes(stream, categories=RESIDUAL_POINTS, ordered=True),
            "position": position,
            "token": _token_column(trace, position),
            "norm": norms.reshape(-1),
        }
    )


def attention_frame(trace: Trace) -> pd.DataFrame:
    """`blocks.{l}.attn.pattern` in long form: layer, head, query, key (positions), query_token, key_token, weight.

    layers · heads · tokens² rows (6.3 million for 24 layers and 16 heads at 128 tokens, about 130 MB): ask for
    it when you need it. Each (layer, head, query)'s weights sum to 1, up to the storage dtype's precision."""
    weights = _numpy(trace.attentions)  # [layers, heads, tokens, tokens]
    layer, head, query, key = _grid(weights.shape)
    return pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "query": query,
            "key": key,
            "query_token": _token_column(trace, query),
            "key_token": _token_column(trace, key),
            "weight": weights.reshape(-1),
        }
    )


def queries_frame(trace: Trace) -> pd.DataFrame:
    """`blocks.{l}.attn.q` in long form: layer, head, position, token, dim, q (before the 1/√d scaling)."""
    return _projection_frame(trace, trace.queries, "q")


def keys_frame(trace: Trace) -> pd.DataFrame:
    """`blocks.{l}.attn.k` in long form: layer, head, position, token, dim, k."""
    return _projection_frame(trace, trace.keys, "k")


def _projection_frame(trace: Trace, values: Tensor | None, column: str) -> pd.DataFrame:
    if values is None:
        raise RplnError(
            "This trace holds no queries and keys: run the task with "
            "options=CaptureOptions(queries_and_keys=True), or read the notices for why they were not kept."
        )
    array = _numpy(values)  # [layers, heads, tokens, head_dim]
    layer, head, position, dim = _grid(array.shape)
    return pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "position": position,
            "token": _token_column(trace, position),
            "dim": dim,
            column: array.reshape(-1),
        }
    )


# --- task results ----------------------------------------------------------------------------------------------


def predictions_frame(result: FillMaskResult) -> pd.DataFrame:
    """One row per mask and candidate: mask (0-based, as in result.predictions), position (its token position),
    rank (1 is best), and the pipeline's token (id), token_str, score and sequence."""
    rows = [
        {"mask": mask, "position": position, "rank": rank, "token": prediction.token,
         "token_str": prediction.token_str, "score": prediction.score, "sequence": prediction.sequence}
        for mask, (position, row) in enumerate(zip(result.mask_positions, result.predictions))
        for rank, prediction in enumerate(row, start=1)
    ]
    return pd.DataFrame(rows, columns=["mask", "position", "rank", "token", "token_str", "score", "sequence"])


def labels_frame(result: ClassificationResult) -> pd.DataFrame:
    """One row per label, best first: rank (1 is best), label, score."""
    rows = [{"rank": rank, "label": label.label, "score": label.score}
            for rank, label in enumerate(result.labels, start=1)]
    return pd.DataFrame(rows, columns=["rank", "label", "score"])


def answers_frame(result: QAResult) -> pd.DataFrame:
    """One row per answer, best first: rank (1 is best), the pipeline's answer, score, start, end (characters of the
    context), then the window and token span it came from (-1 for the null answer)."""
    columns = ["rank", "answer", "score", "start", "end", "window", "start_token", "end_token"]
    rows = [{"rank": rank, **{name: getattr(span, name) for name in columns[1:]}}
            for rank, span in enumerate(result.answers, start=1)]
    return pd.DataFrame(rows, columns=columns)


def entities_frame(result: TagResult) -> pd.DataFrame:
    """One row per entity in text order, with the pipeline's columns: entity, score, index, word, start, end for
    aggregation "none"; entity_group, score, word, start, end otherwise."""
    if result.aggregation_strategy == "none":
        columns = ["entity", "score", "index", "word", "start", "end"]
    else:
        columns = ["entity_group", "score", "word", "start", "end"]
    return pd.DataFrame(result.to_pipeline(), columns=columns)


def choices_frame(result: ChoiceResult) -> pd.DataFrame:
    """One row per choice in the order given: index (0-based, as in result.choices and result.traces), choice,
    score, logit, rank (1 is best)."""
    rank_of = {id(choice): rank for rank, choice in enumerate(result.ranked(), start=1)}
    rows = [{"index": index, "choice": choice.choice, "score": choice.score, "logit": choice.logit,
             "rank": rank_of[id(choice)]} for index, choice in enumerate(result.choices)]
    return pd.DataFrame(rows, columns=["index", "choice", "score", "logit", "rank"])


def generation_frame(result: GenerationResult) -> pd.DataFrame:
    """One row per step and candidate: step (0-based), position (of the generated token), generated (its text),
    generated_probability, then the candidate's rank (1 is best), token (id), token_str and probability. The
    probabilities are the model's own, before temperature, top-k and top-p."""
    columns = ["step", "position", "generated", "generated_probability", "rank", "token", "token_str", "probability"]
    rows = [
        {"step": number, "position": step.position, "generated": step.token_str,
         "generated_probability": step.probability, "rank": rank, "token": candidate.token,
         "token_str": candidate.token_str, "probability": candidate.probability}
        for number, step in enumerate(result.steps)
        for rank, candidate in enumerate(step.candidates, start=1)
    ]
    return pd.DataFrame(rows, columns=columns)


RESULT_FRAMES: dict[type, Callable[..., pd.DataFrame]] = {
    FillMaskResult: predictions_frame,
    ClassificationResult: labels_frame,
    QAResult: answers_frame,
    TagResult: entities_frame,
    ChoiceResult: choices_frame,
    GenerationResult: generation_frame,
}


def result_frame(
    result: FillMaskResult | ClassificationResult | QAResult | TagResult | ChoiceResult | GenerationResult,
) -> pd.DataFrame:
    """The task's output as a frame: fill-mask predictions, classification labels, QA answers, tagged entities,
    scored choices or generation steps with their candidates."""
    frame = RESULT_FRAMES.get(type(result))
    if frame is None:
        raise RplnError(f"There is no frame for a {type(result).__name__}; pass the result of a task function.")
    return frame(result)


# --- helpers ---------------------------------------------------------------------------------------------------


def _numpy(values: Tensor) -> np.ndarray:
    """float32 numpy copy of a stored tensor: exact for float16, bfloat16 and 8-bit storage, which numpy lacks."""
    return values.float().numpy()


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """The index columns of a C-order flattened array of `shape`; int32 keeps million-row frames half the size."""
    return [axis.reshape(-1) for axis in np.indices(shape, dtype=np.int32)]


def _token_column(trace: Trace, positions: np.ndarray) -> pd.Categorical:
    """The readable text of the token at each position, as a categorical (repeated texts share one category)."""
    strings = trace.tokens.strings
    categories = list(dict.fromkeys(strings))
    code_of = {text: code for code, text in enumerate(categories)}
    codes = np.array([code_of[text] for text in strings], dtype=np.int32)
    return pd.Categorical.from_codes(codes[positions], categories=categories)
