"""answer() on a model built so that the right span is known: the decoding must find exactly that span."""

import numpy as np
import pytest
import torch

from rpln_core import RplnError, budgets
from rpln_core.load import load_model
from rpln_core.tasks.qa import answer, window_logits
from rpln_core.tasks.qa_spans import make_qa_windows

FILLER = "The cat sat on the mat and looked at the dog. " * 12
START, END = "ĠBer", "lin"  # the tiny tokenizer splits " Berlin" in two


@pytest.fixture
def limits():
    """budgets.configure for one test; the limits in force before are restored after it."""
    saved = budgets.current()
    yield budgets.configure
    budgets.configure(**{name: getattr(saved, name) for name in saved.__dataclass_fields__})


@pytest.fixture(scope="module")
def oracle(checkpoint_dir):
    """A pre-LN QA model whose start logit peaks on ' Ber', its end logit on 'lin', both less on <s>.

    Every sublayer writes zero, so each token's final hidden state is its normalised word embedding;
    the QA head reads dimensions 0 (start) and 1 (end). ' Ber' spikes the first, 'lin' the second,
    <s> both a little less (its mass is split over three dimensions), other tokens have nothing there.
    """
    model = load_model(str(checkpoint_dir("pre-ln", "qa")))  # a private copy: we rewrite its weights
    body, tokenizer = model.body, model.tokenizer
    with torch.no_grad():
        for layer in body.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        body.embeddings.position_embeddings.weight.zero_()
        body.embeddings.token_type_embeddings.weight.zero_()
        words = body.embeddings.word_embeddings.weight
        words[:, :3] = 0.0
        words[tokenizer.convert_tokens_to_ids(START), 0] = 10.0
        words[tokenizer.convert_tokens_to_ids(END), 1] = 10.0
        words[tokenizer.cls_token_id, :3] = 10.0
        model.qa_outputs.weight.zero_()
        model.qa_outputs.bias.zero_()
        model.qa_outputs.weight[0, 0] = model.qa_outputs.weight[1, 1] = 10.0
    return model


def test_the_answer_is_the_known_span_with_its_character_offsets(oracle):
    context = "Paris is the capital of France, and Berlin is the capital of Germany."
    result = answer(oracle, "What is the capital of Germany?", context)
    best = result.answers[0]
    assert (best.answer, best.start, best.end) == ("Berlin", context.index("Berlin"), context.index("Berlin") + 6)
    assert result.windows == 1
    assert result.to_pipeline()["answer"] == "Berlin"


def test_an_answer_is_never_taken_from_the_question(oracle):
    context = "Paris is the capital of France, and the cat sat on the mat."
    result = answer(oracle, "Is Berlin in France?", context, top_k=3)
    assert all(a.answer != "Berlin" for a in result.answers)
    assert all(context[a.start : a.end] == a.answer for a in result.answers)


def test_a_long_context_is_read_in_windows_and_the_best_window_is_traced(oracle):
    context = FILLER + "Far away, Berlin is the capital of Germany. " + FILLER
    result = answer(oracle, "Which city?", context, max_seq_len=40, doc_stride=12)
    best = result.answers[0]
    assert result.windows > 3
    assert (best.answer, best.start) == ("Berlin", context.index("Berlin"))
    assert result.window == best.window
    assert "Ber" in result.trace.tokens.strings
    assert len(result.start_logits) == len(result.trace.tokens) == len(result.answerable)
    peak = max(range(len(result.start_logits)), key=result.start_logits.__getitem__)
    assert result.trace.tokens.strings[peak] == "Ber"


def test_with_no_answer_in_the_context_the_null_answer_wins_when_allowed(oracle):
    result = answer(oracle, "Which city?", FILLER, handle_impossible_answer=True)
    assert result.to_pipeline() == {"score": pytest.approx(result.answers[0].score), "start": 0, "end": 0, "answer": ""}
    forced = answer(oracle, "Which city?", FILLER, handle_impossible_answer=False)
    assert forced.answers[0].answer != ""


def test_an_answer_present_beats_the_null_answer(oracle):
    result = answer(oracle, "Which city?", "The dog saw Berlin.", handle_impossible_answer=True, top_k=2)
    assert [a.answer for a in result.answers] == ["Berlin", ""]


def test_scores_are_products_of_start_and_end_probabilities(oracle):
    result = answer(oracle, "Which city?", "The dog saw Berlin.")
    start = torch.tensor(result.start_logits)
    end = torch.tensor(result.end_logits)
    keep = torch.tensor(result.answerable)
    keep[0] = True  # <s> takes part in the softmax, as in 4.x
    p_start = torch.where(keep, start, torch.tensor(-1e4)).softmax(-1)
    p_end = torch.where(keep, end, torch.tensor(-1e4)).softmax(-1)
    start_token = result.trace.tokens.strings.index("Ber")
    assert result.trace.tokens.strings[start_token + 1] == "lin"
    expected = float(p_start[start_token] * p_end[start_token + 1])
    assert result.answers[0].score == pytest.approx(expected, rel=1e-5)
    assert (result.answers[0].start_token, result.answers[0].end_token) == (start_token, start_token + 1)


@pytest.mark.parametrize("question, context", [("", "Some context."), ("Who?", "   ")])
def test_empty_question_or_context_is_refused(oracle, question, context):
    with pytest.raises(RplnError):
        answer(oracle, question, context)


def test_an_mlm_checkpoint_refuses_to_answer(loaded):
    with pytest.raises(RplnError, match="no question answering head"):
        answer(loaded("pre-ln", "mlm"), "Who?", "Nobody.")


def test_the_window_search_runs_in_batches_of_window_batch_windows(oracle, limits):
    context = FILLER + "Far away, Berlin is the capital of Germany. " + FILLER
    batches = []
    hook = oracle.body.register_forward_hook(lambda module, args, kwargs, output: batches.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        limits(window_batch=2)
        result = answer(oracle, "Which city?", context, max_seq_len=40, doc_stride=12)
    finally:
        hook.remove()
    n = result.windows
    assert n > 2
    # Batches of two (the last one what is left), then the traced pass of the best window alone.
    assert batches == [min(2, n - first) for first in range(0, n, 2)] + [1]


@pytest.mark.parametrize("architecture", ["pre-ln", "post-ln"])
def test_batched_window_logits_equal_one_batch_bit_for_bit(loaded, architecture):
    model = loaded(architecture, "qa")
    windows = make_qa_windows(model.tokenizer, "Who sat?", FILLER * 2, max_seq_len=32, doc_stride=8)
    assert windows.count > 8
    start, end = window_logits(model, windows, batch=windows.count)
    for batch in (1, 3, 8):
        start_b, end_b = window_logits(model, windows, batch=batch)
        assert torch.equal(start_b, start) and torch.equal(end_b, end)


def test_answers_do_not_depend_on_window_batch(loaded, limits):
    model = loaded("pre-ln", "qa")
    context = FILLER * 2 + "The dog saw Berlin."
    limits(window_batch=128)
    whole = answer(model, "Who sat?", context, max_seq_len=32, doc_stride=8, top_k=5)
    limits(window_batch=1)
    one_by_one = answer(model, "Who sat?", context, max_seq_len=32, doc_stride=8, top_k=5)
    assert whole.windows > 8
    assert one_by_one.answers == whole.answers  # dataclass equality: the scores bit for bit
    assert (one_by_one.window, one_by_one.start_logits) == (whole.window, whole.start_logits)


def test_a_huge_context_is_refused_naming_the_context_before_the_model_runs(oracle, limits):
    calls = []
    hook = oracle.body.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(RplnError, match=r"The context is 50,001 characters long; this app reads at most 50,000"):
            answer(oracle, "Which city?", "x" * 50_001)
        limits(max_context_chars=100_000)
        with pytest.raises(RplnError, match=r"context needs [\d,]+ windows of 64 tokens.*at most 128"):
            answer(oracle, "Which city?", "Berlin " * 14_000)
    finally:
        hook.remove()
    assert calls == []


@pytest.mark.parametrize("top_k", ["3", float("nan"), 2.5, True, 0, 101])
def test_a_bad_top_k_is_refused_naming_it_before_the_model_runs(oracle, top_k):
    with pytest.raises(RplnError, match="top_k must be a whole number from 1 to 100"):
        answer(oracle, "Which city?", "The dog saw Berlin.", top_k=top_k)


def test_a_whole_float_top_k_from_a_slider_is_accepted(oracle):
    assert len(answer(oracle, "Which city?", "The dog saw Berlin.", top_k=2.0).answers) == 2


def test_answerable_follows_the_rules_asked_for(oracle):
    context = "The dog  saw\tBerlin."
    plain = answer(oracle, "Which city?", context)
    strict = answer(oracle, "Which city?", context, text_spans_only=True)
    blank = [i for i, (segment, (s, e)) in enumerate(zip(plain.trace.tokens.segments, plain.trace.tokens.offsets))
             if segment == 1 and not context[s:e].strip()]
    assert blank, "the double space and the tab give whitespace-only tokens"
    context_tokens = [segment == 1 for segment in plain.trace.tokens.segments]
    assert plain.answerable == context_tokens  # 4.x: every context token, whitespace too
    assert strict.answerable == [c and i not in blank for i, c in enumerate(context_tokens)]


def test_without_max_seq_len_windows_are_4x_default_lowered_to_the_models_limit(oracle):
    # The tiny checkpoints' tokenizer has no limit, so 4.x's default is 384: lowered to the model's 64, with a notice.
    result = answer(oracle, "Which city?", FILLER)
    assert result.notices == ["max_seq_len lowered from 384 to 64, the model's limit."]
    assert np.array(result.trace.tokens.ids).shape == (64,)
