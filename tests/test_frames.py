"""The trace's pandas frames hold exactly the trace's values, under the trace vocabulary's names, one row per
observation; the task results' frames hold exactly the results' fields."""

import numpy as np
import pandas as pd
import pytest
import torch

from rpln_core import CaptureOptions, RplnError, analysis, answer, classify, fill_mask
from rpln_core.frames import (
    RESIDUAL_POINTS,
    answers_frame,
    attention_frame,
    labels_frame,
    layernorms_frame,
    predictions_frame,
    result_frame,
    trace_frames,
)

MASKED = "The cat sat on the <mask> and the dog sat on the <mask>."


@pytest.fixture(scope="module")
def mlm(loaded):
    return fill_mask(loaded("pre-ln"), MASKED, options=CaptureOptions(queries_and_keys=True))


@pytest.fixture(scope="module")
def frames(mlm):
    return trace_frames(mlm.trace, attention=True, queries_and_keys=True)


def as_numpy(tensor):
    return tensor.float().numpy()


def test_the_frames_are_named_as_asked_and_the_large_ones_only_on_request(mlm, frames):
    assert set(trace_frames(mlm.trace)) == {"tokens", "layers", "layernorms", "residual"}
    assert set(frames) == {"tokens", "layers", "layernorms", "residual", "attention", "queries", "keys"}


def test_columns_speak_the_trace_vocabulary(mlm, frames):
    assert list(frames["tokens"].columns) == ["position", "token", "id", "special", "segment", "start", "end"]
    assert list(frames["layers"].columns) == list(analysis.summary_table(mlm.trace)[0])
    assert list(frames["layernorms"].columns) == [
        "name", "module", "layer", "placement", "position", "token", "mean", "std", "scale", "max_abs"
    ]
    assert list(frames["residual"].columns) == ["layer", "stream", "position", "token", "norm"]
    assert list(frames["attention"].columns) == ["layer", "head", "query", "key", "query_token", "key_token", "weight"]
    assert list(frames["queries"].columns) == ["layer", "head", "position", "token", "dim", "q"]
    assert list(frames["keys"].columns) == ["layer", "head", "position", "token", "dim", "k"]
    assert list(frames["residual"]["stream"].cat.categories) == list(RESIDUAL_POINTS)


def test_tokens_frame_is_the_traces_tokens(mlm, frames):
    tokens, frame = mlm.trace.tokens, frames["tokens"]
    assert frame["position"].tolist() == list(range(len(tokens)))
    assert frame["token"].tolist() == tokens.strings
    assert frame["id"].tolist() == tokens.ids
    assert frame["special"].tolist() == tokens.special
    assert [None if pd.isna(s) else s for s in frame["segment"]] == tokens.segments
    assert list(zip(frame["start"], frame["end"])) == tokens.offsets


def test_layers_frame_holds_the_token_means_of_the_traces_norms(mlm, frames):
    trace, frame = mlm.trace, frames["layers"]
    assert frame["layer"].tolist() == list(range(trace.num_layers))  # layer l is blocks.l, from 0
    for column in ("resid_pre_norm", "resid_mid_norm", "resid_post_norm", "attn_out_norm", "ffn_out_norm"):
        np.testing.assert_array_equal(frame[column].to_numpy(), as_numpy(getattr(trace, column).mean(-1)), column)
    np.testing.assert_array_equal(frame["entropy_mean"], as_numpy(analysis.attention_entropy(trace).mean(-1)))


def test_layernorms_frame_has_a_row_per_layernorm_and_position_with_its_statistics(mlm, frames):
    trace, frame = mlm.trace, frames["layernorms"]
    assert len(frame) == sum(len(stats.positions) for stats in trace.layernorms)
    for stats in trace.layernorms:
        rows = frame[frame["name"] == stats.name]
        assert rows["position"].tolist() == stats.positions
        assert rows["token"].tolist() == [trace.tokens.strings[p] for p in stats.positions]
        assert set(rows["module"]) == {stats.module} and set(rows["placement"]) == {stats.placement}
        assert rows["layer"].isna().all() if stats.layer is None else set(rows["layer"]) == {stats.layer}
        for column in ("mean", "std", "scale", "max_abs"):
            np.testing.assert_array_equal(rows[column].to_numpy(), as_numpy(getattr(stats, column)), column)
    # the MLM head's LayerNorm reads only the two masks
    assert frame[frame["name"] == "lm_head.ln"]["token"].tolist() == ["<mask>", "<mask>"]


def test_residual_frame_folds_back_into_the_traces_norm_tensors(mlm, frames):
    trace, frame = mlm.trace, frames["residual"]
    for stream, rows in frame.groupby("stream", observed=True):
        wide = rows.pivot(index="layer", columns="position", values="norm")  # [layers, tokens]
        np.testing.assert_array_equal(wide.to_numpy(), as_numpy(getattr(trace, f"{stream}_norm")), stream)
    assert frame["token"].tolist()[: len(trace.tokens)] == trace.tokens.strings


def test_attention_frame_is_the_pattern_and_each_querys_weights_sum_to_one(mlm, frames):
    trace, frame = mlm.trace, frames["attention"]
    layers, heads, tokens = trace.attentions.shape[:3]
    assert len(frame) == layers * heads * tokens * tokens
    weights = frame["weight"].to_numpy().reshape(trace.attentions.shape)
    np.testing.assert_array_equal(weights, as_numpy(trace.attentions))
    sums = frame.groupby(["layer", "head", "query"])["weight"].sum()
    assert len(sums) == layers * heads * tokens
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=5e-3)  # float16 weights
    # `head` is also DataFrame.head: columns are read with brackets or query strings, never as attributes
    row = frame.query("layer == 1 and head == 2 and query == 3 and key == 0").iloc[0]
    assert row["weight"] == float(trace.attentions[1, 2, 3, 0])
    assert (row["query_token"], row["key_token"]) == (trace.tokens.strings[3], "<s>")


def test_attention_frame_of_8_bit_attentions_holds_their_stored_values(loaded):
    trace = fill_mask(loaded("pre-ln"), MASKED, options=CaptureOptions(attention_budget_bytes=1024)).trace
    assert trace.attentions.dtype == torch.float8_e5m2
    np.testing.assert_array_equal(attention_frame(trace)["weight"].to_numpy(), as_numpy(trace.attentions).reshape(-1))


def test_query_and_key_frames_are_the_captured_vectors(mlm, frames):
    trace = mlm.trace
    for name, column, values in (("queries", "q", trace.queries), ("keys", "k", trace.keys)):
        frame = frames[name]
        np.testing.assert_array_equal(frame[column].to_numpy().reshape(values.shape), as_numpy(values))
        first = frame.query("layer == 2 and head == 1 and position == 4")
        assert first["dim"].tolist() == list(range(values.shape[-1]))
        assert set(first["token"]) == {trace.tokens.strings[4]}


def test_q_dot_k_from_the_frames_gives_back_an_attention_row(mlm, frames):
    """The frames join on their shared columns: softmax over keys of sum over dims of q·k / √d is one pattern row."""
    layer, head, query = 1, 0, 2
    q = frames["queries"].query("layer == @layer and head == @head and position == @query")
    k = frames["keys"].query("layer == @layer and head == @head")
    both = k.merge(q[["dim", "q"]], on="dim")
    scores = (both.q * both.k).groupby(both.position).sum() / np.sqrt(len(q))
    weights = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(weights.to_numpy(), as_numpy(mlm.trace.attentions[layer, head, query]), atol=2e-3)


def test_asking_for_queries_of_a_trace_without_them_names_the_option(loaded):
    trace = fill_mask(loaded("pre-ln"), MASKED).trace
    with pytest.raises(RplnError, match="queries_and_keys=True"):
        trace_frames(trace, queries_and_keys=True)


# --- task results ------------------------------------------------------------------------------------------------


def test_fill_mask_predictions_frame_has_the_pipelines_fields_per_mask_and_rank(mlm):
    frame = result_frame(mlm)
    assert list(frame.columns) == ["mask", "position", "rank", "token", "token_str", "score", "sequence"]
    expected = [
        (mask, mlm.mask_positions[mask], rank + 1, p.token, p.token_str, p.score, p.sequence)
        for mask, row in enumerate(mlm.predictions)
        for rank, p in enumerate(row)
    ]
    assert list(frame.itertuples(index=False, name=None)) == expected
    assert predictions_frame(mlm).equals(frame)


def test_classification_labels_frame_is_best_first(loaded):
    result = classify(loaded("pre-ln", "classification"), "A good movie.")
    frame = result_frame(result)
    assert list(frame.columns) == ["rank", "label", "score"]
    assert list(frame.itertuples(index=False, name=None)) == [
        (rank, label.label, label.score) for rank, label in enumerate(result.labels, start=1)
    ]
    assert labels_frame(result).equals(frame)


def test_qa_answers_frame_has_the_pipelines_fields_and_where_each_came_from(loaded):
    result = answer(loaded("pre-ln", "qa"), "Who sat?", "The cat sat on the mat.", top_k=3)
    frame = result_frame(result)
    assert list(frame.columns) == ["rank", "answer", "score", "start", "end", "window", "start_token", "end_token"]
    assert frame.drop(columns="rank").to_dict(orient="records") == [
        {"answer": a.answer, "score": a.score, "start": a.start, "end": a.end, "window": a.window,
         "start_token": a.start_token, "end_token": a.end_token}
        for a in result.answers
    ]
    assert answers_frame(result).equals(frame)


def test_a_result_without_a_frame_is_refused_by_name(mlm):
    with pytest.raises(RplnError, match="Trace"):
        result_frame(mlm.trace)


def test_frames_of_layernorms_outside_the_layers_have_no_layer(mlm):
    frame = layernorms_frame(mlm.trace)
    outside = frame[frame["layer"].isna()]["name"].unique().tolist()
    assert outside == ["embed.ln", "ln_final", "lm_head.ln"]
