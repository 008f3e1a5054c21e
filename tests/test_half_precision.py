"""Every task runs on a bfloat16 or float16 model and agrees with the same checkpoint in float32.

Tolerances, measured on CPU (torch 2.13) on exactly the tiny models and inputs below (3 layers, 32 wide, seed 0)
and on the bundled twins (4 layers, 256 wide, trained), then widened two- to threefold:
- probabilities and scores, the largest |p_half - p_float32| over the whole vocabulary or every label/answer:
  bfloat16 0.0047 tiny, 0.011 bundled; float16 0.0005 tiny, 0.00064 bundled. Allowed: 0.02 and 0.002.
- logits (classification, QA start/end): bfloat16 up to 0.033, float16 up to 0.0037. Allowed: 0.1 and 0.01.
- per-token residual norms, relative: bfloat16 0.5%, float16 0.05%. Allowed: 1% and 0.2%.
Rankings agree up to near-ties: bfloat16 keeps 8 significant bits, so two candidates 0.0004 apart may swap
(preln-mini's " world" 0.0326 and " nation" 0.0322 do).
"""

import pytest
import torch

from conftest import LABELS
from rpln_core import classify, fill_mask
from rpln_core.load import load_model
from rpln_core.tasks.qa import answer

HALF = [torch.bfloat16, torch.float16]
ARCHS = ["pre-ln", "post-ln"]
PROBABILITY_TOLERANCE = {torch.bfloat16: 0.02, torch.float16: 0.002}
LOGIT_TOLERANCE = {torch.bfloat16: 0.1, torch.float16: 0.01}
NORM_TOLERANCE = {torch.bfloat16: 0.01, torch.float16: 0.002}
MASKED = "Paris is the <mask> of France, and <mask> is the capital of Germany."
CONTEXT = "The king wrote the letter in 1790. Paris is the capital of France, and Berlin is the capital of Germany."


@pytest.fixture(scope="module")
def in_dtype(checkpoint_dir):
    """Return a function (architecture, task, dtype, **config) -> the tiny checkpoint loaded in that dtype."""
    cache = {}

    def get(architecture, task, dtype, **config):
        key = (architecture, task, dtype, repr(sorted(config.items())))
        if key not in cache:
            cache[key] = load_model(str(checkpoint_dir(architecture, task, **config)), dtype=dtype)
        return cache[key]

    return get


def assert_same_ranking_up_to_near_ties(half_ids, float_probs, tolerance):
    """Rank by rank, half precision's choice is at most `tolerance` less probable (in float32) than float32's."""
    best = float_probs.sort(descending=True).values
    for rank, token in enumerate(half_ids):
        assert float_probs[token] >= best[rank] - tolerance, f"rank {rank}: token {token}"


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_fill_mask_in_half_precision_matches_float32(loaded, in_dtype, arch, dtype):
    half, full = in_dtype(arch, "mlm", dtype), loaded(arch)
    assert next(half.model.parameters()).dtype == dtype
    ours, reference = fill_mask(half, MASKED, top_k=5), fill_mask(full, MASKED, top_k=5)
    tolerance = PROBABILITY_TOLERANCE[dtype]
    torch.testing.assert_close(ours.probabilities, reference.probabilities, atol=tolerance, rtol=0)
    for row, float_probs in zip(ours.predictions, reference.probabilities):
        assert_same_ranking_up_to_near_ties([p.token for p in row], float_probs, tolerance)
        for prediction in row:
            assert prediction.score == pytest.approx(float(float_probs[prediction.token]), abs=tolerance)
    # The logit lens ran the half-precision head: its last stream is the model's own prediction.
    assert ours.trace.logit_lens.top_ids[-1, :, 0].tolist() == [row[0].token for row in ours.predictions]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_the_trace_of_a_half_precision_pass_keeps_its_statistics_in_float32(loaded, in_dtype, arch, dtype):
    trace = fill_mask(in_dtype(arch, "mlm", dtype), MASKED).trace
    reference = fill_mask(loaded(arch), MASKED).trace
    for name in ("resid_pre_norm", "resid_mid_norm", "resid_post_norm", "attn_out_norm", "ffn_out_norm",
                 "attention_entropy"):
        assert getattr(trace, name).dtype == torch.float32, name
    for stats in trace.layernorms:
        assert {getattr(stats, f).dtype for f in ("mean", "std", "scale", "max_abs", "weight")} == {torch.float32}
    assert trace.logit_lens.top_probs.dtype == torch.float32
    torch.testing.assert_close(trace.resid_post_norm, reference.resid_post_norm, rtol=NORM_TOLERANCE[dtype], atol=0)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_classify_in_half_precision_matches_float32(loaded, in_dtype, arch, dtype):
    half, full = in_dtype(arch, "classification", dtype, **LABELS), loaded(arch, "classification", **LABELS)
    for inputs in (("A good movie makes you laugh.",), ("The king wrote the letter.", "Who wrote the letter?")):
        ours, reference = classify(half, *inputs), classify(full, *inputs)
        torch.testing.assert_close(
            torch.tensor(ours.logits), torch.tensor(reference.logits), atol=LOGIT_TOLERANCE[dtype], rtol=0
        )
        scores = {label.label: label.score for label in reference.labels}
        for label in ours.labels:
            assert label.score == pytest.approx(scores[label.label], abs=PROBABILITY_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("windows", ["one window", "several windows"])
def test_answer_in_half_precision_matches_float32(loaded, in_dtype, arch, dtype, windows):
    """Several windows also run the uncaptured batched pass (window_logits) in half precision."""
    half, full = in_dtype(arch, "qa", dtype), loaded(arch, "qa")
    context, sizes = (CONTEXT, {}) if windows == "one window" else (CONTEXT * 3, dict(max_seq_len=40, doc_stride=10))
    ours = answer(half, "Who wrote the letter?", context, top_k=3, **sizes)
    reference = answer(full, "Who wrote the letter?", context, top_k=3, **sizes)
    assert (ours.windows > 1) == (windows == "several windows")
    if ours.window == reference.window:
        for name in ("start_logits", "end_logits"):
            torch.testing.assert_close(
                torch.tensor(getattr(ours, name)), torch.tensor(getattr(reference, name)),
                atol=LOGIT_TOLERANCE[dtype], rtol=0,
            )
    float_scores = {(a.start, a.end): a.score for a in reference.answers}
    best = ours.answers[0]
    assert best.score == pytest.approx(reference.answers[0].score, abs=PROBABILITY_TOLERANCE[dtype])
    if (best.start, best.end) in float_scores:  # else a near-tie took the place of float32's third answer
        assert best.score == pytest.approx(float_scores[(best.start, best.end)], abs=PROBABILITY_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", ["preln-mini", "postln-mini"])
def test_a_trained_model_predicts_the_same_words_in_half_precision(name, dtype):
    """The bundled twins are trained, so their predictions are peaked: near-ties are rare, rankings hold."""
    half, full = load_model(name, dtype=dtype), load_model(name)
    tolerance = PROBABILITY_TOLERANCE[dtype]
    for text in ("In the beginning God created the heaven and the <mask>.",
                 "This movie is one of the <mask> films of the year.",
                 "The United States must <mask> its army."):
        ours, reference = fill_mask(half, text), fill_mask(full, text)
        torch.testing.assert_close(ours.probabilities, reference.probabilities, atol=tolerance, rtol=0)
        assert ours.predictions[0][0].token == reference.predictions[0][0].token
        if dtype == torch.float16:
            assert [p.token for p in ours.predictions[0]] == [p.token for p in reference.predictions[0]]
        top = [p.token for p in ours.predictions[0]]
        assert_same_ranking_up_to_near_ties(top, reference.probabilities[0], tolerance)
