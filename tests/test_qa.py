"""answer() on a model built so that the right span is known: the decoding must find exactly that span."""

import pytest
import torch

from rpln_core import RplnError
from rpln_core.load import load_model
from rpln_core.tasks.qa import answer

FILLER = "The cat sat on the mat and looked at the dog. " * 12
START, END = "ĠBer", "lin"  # the tiny tokenizer splits " Berlin" in two


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
