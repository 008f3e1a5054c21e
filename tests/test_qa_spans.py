"""Windowing and span decoding of extractive QA, checked against hand-made logits and hand-computed scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpln_core.errors import RplnError
from rpln_core.synthetic import SAMPLE_TEXT, build_tokenizer
from rpln_core.tasks.qa_spans import AnswerSpan, QAWindows, decode_answers, make_qa_windows

EXTRA_TEXT = [
    "The treasure lies near Zanzibar under the old oak tree.",
    "Emoji 😀👍🏽 and مرحبا بالعالم and zero\u200bwidth text.",
]
QUESTION = "Who wrote the letter?"
# 63 sentences; the answer word "Zanzibar" only appears in the final one.
LONG_CONTEXT = " ".join(SAMPLE_TEXT * 9) + " The treasure lies near Zanzibar under the old oak tree."
WEIRD_CONTEXT = (
    "Emoji 😀👍🏽 here. مرحبا بالعالم is RTL. zero\u200bwidth\u200djoin. "
    "ctrl\x00\x07\x1b char\ttab\nnew. The king wrote the letter."
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(SAMPLE_TEXT + EXTRA_TEXT, vocab_size=400)


@pytest.fixture(scope="module")
def long_windows(tok) -> QAWindows:
    return make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48, doc_stride=16)


def context_positions(windows: QAWindows, w: int) -> list[int]:
    """Token indices of window w that belong to the context."""
    return [t for t, sid in enumerate(windows.encoding.sequence_ids(w)) if sid == 1]


def token_of(windows: QAWindows, w: int, char: int) -> int:
    """The context token of window w whose offsets contain the character index `char`."""
    for t in context_positions(windows, w):
        s, e = windows.offsets[w][t]
        if s <= char < e:
            return t
    raise AssertionError(f"char {char} not in window {w}")


def peak_logits(windows: QAWindows, peaks: dict[tuple[int, int], float]) -> np.ndarray:
    """Zero logits everywhere except the given (window, token) -> value peaks."""
    logits = np.zeros(tuple(windows.input_ids.shape), dtype=np.float32)
    for (w, t), value in peaks.items():
        logits[w, t] = value
    return logits


def softmax_prob(windows: QAWindows, w: int, logits: np.ndarray, t: int) -> float:
    """Hand-computed 4.x probability: softmax of window w over its context tokens plus <s> only."""
    members = [0] + context_positions(windows, w)
    denominator = sum(math.exp(float(logits[w, i])) for i in members)
    return math.exp(float(logits[w, t])) / denominator


# ---------------------------------------------------------------- windows


def test_long_context_is_split_into_several_windows_of_at_most_max_seq_len(long_windows):
    assert long_windows.input_ids.shape[0] >= 5
    assert long_windows.input_ids.shape[1] <= 48
    assert long_windows.input_ids.dtype == torch.long
    assert long_windows.attention_mask.shape == long_windows.input_ids.shape
    assert long_windows.notices == []


def test_every_window_starts_with_cls_question_and_two_separators(tok, long_windows):
    question_ids = tok(QUESTION, add_special_tokens=False)["input_ids"]
    prefix = [tok.cls_token_id] + question_ids + [tok.sep_token_id, tok.sep_token_id]
    for row in long_windows.input_ids.tolist():
        assert row[: len(prefix)] == prefix


def test_windows_overlap_by_the_stride_and_together_cover_every_context_token(tok, long_windows):
    ids = long_windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(long_windows, w)] for w in range(len(ids))]
    for previous, following in zip(pieces, pieces[1:]):
        assert previous[-16:] == following[:16]  # doc_stride=16 tokens shared by consecutive windows
    stitched = pieces[0] + [token for piece in pieces[1:] for token in piece[16:]]
    assert stitched == tok(LONG_CONTEXT, add_special_tokens=False)["input_ids"]


def test_only_the_last_window_is_padded_and_padding_is_masked(tok, long_windows):
    ids, mask = long_windows.input_ids, long_windows.attention_mask
    is_pad = ids == tok.pad_token_id
    assert not is_pad[:-1].any()
    assert torch.equal(mask.bool(), ~is_pad)


def test_allowed_marks_context_tokens_only(tok, long_windows):
    for w in range(long_windows.input_ids.shape[0]):
        sequence_ids = long_windows.encoding.sequence_ids(w)
        for t, sid in enumerate(sequence_ids):
            if sid != 1:  # question, <s>, </s>, padding
                assert not long_windows.allowed[w, t]
                assert long_windows.offsets[w][t] == (0, 0)
        assert long_windows.allowed[w].sum() > 0
        assert not long_windows.allowed[w, 0]  # <s> is never an answer boundary


def test_allowed_offsets_point_at_the_token_text_in_the_context(tok, long_windows):
    for w in range(long_windows.input_ids.shape[0]):
        for t in np.flatnonzero(long_windows.allowed[w]):
            s, e = long_windows.offsets[w][t]
            token_text = tok.convert_tokens_to_string([tok.convert_ids_to_tokens(int(long_windows.input_ids[w, t]))])
            assert 0 <= s < e <= len(LONG_CONTEXT)
            assert LONG_CONTEXT[s:e] == token_text.lstrip(" ")


def test_emoji_rtl_zero_width_and_control_chars_keep_offsets_into_the_original_string(tok):
    windows = make_qa_windows(tok, QUESTION, WEIRD_CONTEXT, max_seq_len=40, doc_stride=8)
    assert windows.input_ids.shape[0] > 1
    covered = set()
    for w in range(windows.input_ids.shape[0]):
        word_ids = windows.encoding.word_ids(w)
        tokens_by_word: dict[int, list[int]] = {}
        for t in np.flatnonzero(windows.allowed[w]):
            s, e = windows.offsets[w][t]
            assert 0 <= s < e <= len(WEIRD_CONTEXT)
            covered.update(range(s, e))
            tokens_by_word.setdefault(word_ids[t], []).append(int(t))
        # A word's bytes decode to exactly the context text its offsets span (bytes of one emoji may be
        # split over tokens, so compare whole words, and only words fully inside this window).
        for word, positions in tokens_by_word.items():
            if positions[0] == context_positions(windows, w)[0] or positions[-1] == context_positions(windows, w)[-1]:
                continue
            text = tok.decode(windows.input_ids[w, positions].tolist())
            s, e = windows.offsets[w][positions[0]][0], windows.offsets[w][positions[-1]][1]
            assert WEIRD_CONTEXT[s:e] == text.lstrip(" "), word
    # Every visible character (everything but whitespace) is covered by some allowed token.
    assert {i for i, ch in enumerate(WEIRD_CONTEXT) if not ch.isspace()} <= covered


@pytest.mark.parametrize("word", ["😀👍🏽", "مرحبا", "بالعالم", "\x00\x07\x1b", "letter"])
def test_answers_over_unusual_characters_map_back_to_the_same_characters(tok, word):
    windows = make_qa_windows(tok, QUESTION, WEIRD_CONTEXT, max_seq_len=40, doc_stride=8)
    char = WEIRD_CONTEXT.index(word)
    w = next(w for w in range(windows.input_ids.shape[0]) if any(
        windows.offsets[w][t][0] <= char < windows.offsets[w][t][1] for t in context_positions(windows, w)))
    first = token_of(windows, w, char)
    last = token_of(windows, w, char + len(word) - 1)
    start = peak_logits(windows, {(w, first): 10.0})
    end = peak_logits(windows, {(w, last): 10.0})
    answer = decode_answers(windows, start, end)[0]
    assert (answer.answer, answer.start, answer.end) == (word, char, char + len(word))
    assert WEIRD_CONTEXT[answer.start : answer.end] == word


# ---------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def short_windows(tok) -> QAWindows:
    return make_qa_windows(tok, QUESTION, "The king wrote the letter in 1790. Paris is the capital of France.")


def test_peak_on_a_word_gives_that_word_and_its_char_offsets(short_windows):
    context = short_windows.context
    char = context.index("letter")
    t = token_of(short_windows, 0, char)
    logits = peak_logits(short_windows, {(0, t): 8.0})
    answers = decode_answers(short_windows, logits, logits)
    assert len(answers) == 1
    assert (answers[0].answer, answers[0].start, answers[0].end) == ("letter", char, char + 6)
    assert (answers[0].window, answers[0].start_token, answers[0].end_token) == (0, t, t)


def test_score_is_the_product_of_the_start_and_end_softmaxes(short_windows):
    context = short_windows.context
    s = token_of(short_windows, 0, context.index("king"))
    e = token_of(short_windows, 0, context.index("letter"))
    start = peak_logits(short_windows, {(0, s): 5.0, (0, 1): 50.0})  # token 1 is question: masked out
    end = peak_logits(short_windows, {(0, e): 4.0, (0, 0): 1.0})  # <s> takes part in the softmax
    answer = decode_answers(short_windows, start, end)[0]
    assert answer.answer == "king wrote the letter"
    expected = softmax_prob(short_windows, 0, start, s) * softmax_prob(short_windows, 0, end, e)
    assert answer.score == pytest.approx(expected, rel=1e-6)
    # Same thing in closed form: K zero-logit context tokens besides the peak, plus <s>.
    k = len(context_positions(short_windows, 0))
    closed = (math.e**5 / (math.e**5 + k)) * (math.e**4 / (math.e**4 + math.e + (k - 1)))
    assert answer.score == pytest.approx(closed, rel=1e-6)


def test_torch_logits_give_the_same_answers_as_numpy(short_windows):
    t = token_of(short_windows, 0, short_windows.context.index("Paris"))
    logits = peak_logits(short_windows, {(0, t): 6.0})
    from_numpy = decode_answers(short_windows, logits, logits, top_k=3)
    from_torch = decode_answers(short_windows, torch.from_numpy(logits), torch.from_numpy(logits), top_k=3)
    assert from_numpy == from_torch


def test_top_k_answers_come_best_first_with_the_hand_computed_scores(short_windows):
    context = short_windows.context
    a = token_of(short_windows, 0, context.index("king"))
    b = token_of(short_windows, 0, context.index("letter"))
    start = peak_logits(short_windows, {(0, a): 6.0, (0, b): 4.0})
    end = peak_logits(short_windows, {(0, a): 2.0, (0, b): 5.0})
    answers = decode_answers(short_windows, start, end, top_k=3)

    def score(s, e):
        return softmax_prob(short_windows, 0, start, s) * softmax_prob(short_windows, 0, end, e)

    # Peak pairs, numerators: (a,b)=e^11 > (b,b)=e^9 > (a,a)=e^8; (b,a) is impossible (end before start).
    assert [x.answer for x in answers] == ["king wrote the letter", "letter", "king"]
    assert [(x.start_token, x.end_token) for x in answers] == [(a, b), (b, b), (a, a)]
    assert [x.score for x in answers] == pytest.approx([score(a, b), score(b, b), score(a, a)], rel=1e-6)


def test_max_answer_len_bounds_the_span_in_tokens(short_windows):
    context = short_windows.context
    s = token_of(short_windows, 0, context.index("king"))
    e = token_of(short_windows, 0, context.index("France"))
    start = peak_logits(short_windows, {(0, s): 9.0})
    end = peak_logits(short_windows, {(0, e): 9.0})
    long_enough = decode_answers(short_windows, start, end, max_answer_len=e - s + 1)[0]
    assert (long_enough.start_token, long_enough.end_token) == (s, e)
    for max_len in (1, 3, e - s):
        answers = decode_answers(short_windows, start, end, top_k=5, max_answer_len=max_len)
        assert all(0 <= x.end_token - x.start_token < max_len for x in answers)


def test_spans_never_touch_disallowed_tokens_even_with_the_highest_logits(tok, long_windows):
    n, seq = long_windows.input_ids.shape
    rng = np.random.default_rng(0)
    start = rng.normal(size=(n, seq)).astype(np.float32)
    end = rng.normal(size=(n, seq)).astype(np.float32)
    start[~long_windows.allowed] = 100.0  # question, <s>, </s>, padding, lone spaces
    end[~long_windows.allowed] = 100.0
    answers = decode_answers(long_windows, start, end, top_k=20)
    assert len(answers) == 20
    for x in answers:
        assert long_windows.allowed[x.window, x.start_token] and long_windows.allowed[x.window, x.end_token]
        assert x.answer == LONG_CONTEXT[x.start : x.end] != ""


def test_align_to_words_widens_a_subword_to_its_whole_word(short_windows):
    context = short_windows.context
    word_start = context.index("France")
    t = token_of(short_windows, 0, word_start + 3)  # a piece inside "France" ("Fr" + "ance")
    assert short_windows.offsets[0][t][0] > word_start
    logits = peak_logits(short_windows, {(0, t): 9.0})
    aligned = decode_answers(short_windows, logits, logits)[0]
    raw = decode_answers(short_windows, logits, logits, align_to_words=False)[0]
    assert (aligned.answer, aligned.start) == ("France", word_start)
    assert raw.answer == context[slice(*short_windows.offsets[0][t])] != "France"


def test_token_spans_widened_to_the_same_word_count_once_toward_top_k(short_windows):
    context = short_windows.context
    word_start = context.index("France")
    first, piece = token_of(short_windows, 0, word_start), token_of(short_windows, 0, word_start + 3)
    assert first != piece  # "France" is two tokens, so (first, piece) and (piece, piece) are both "France"
    start = peak_logits(short_windows, {(0, first): 9.0, (0, piece): 8.0})
    end = peak_logits(short_windows, {(0, piece): 9.0})
    answers = decode_answers(short_windows, start, end, top_k=2)
    assert [x.answer for x in answers][0] == "France"
    assert len(answers) == 2 and answers[1].answer != "France"
    assert (answers[0].start_token, answers[0].end_token) == (first, piece)  # the better-scored occurrence


def test_null_answer_wins_when_cls_dominates_and_impossible_answers_are_handled(short_windows):
    t = token_of(short_windows, 0, short_windows.context.index("king"))
    logits = peak_logits(short_windows, {(0, 0): 10.0, (0, t): 2.0})
    answers = decode_answers(short_windows, logits, logits, top_k=2, handle_impossible_answer=True)
    null = softmax_prob(short_windows, 0, logits, 0) ** 2
    assert (answers[0].answer, answers[0].start, answers[0].end) == ("", 0, 0)
    assert (answers[0].start_token, answers[0].end_token) == (-1, -1)
    assert answers[0].score == pytest.approx(null, rel=1e-6)
    assert answers[1].answer == "king"


def test_no_null_answer_without_handle_impossible_answer(short_windows):
    logits = peak_logits(short_windows, {(0, 0): 10.0})
    answers = decode_answers(short_windows, logits, logits, top_k=5)
    assert len(answers) == 5
    assert all(x.answer != "" and x.start_token > 0 for x in answers)


def test_null_score_is_the_minimum_over_windows(long_windows):
    n = long_windows.input_ids.shape[0]
    logits = peak_logits(long_windows, {(w, 0): 12.0 for w in range(n)})
    logits[2, 0] = 9.0  # window 2 is the least sure the question is unanswerable
    answers = decode_answers(long_windows, logits, logits, handle_impossible_answer=True)
    assert answers[0].answer == ""
    assert answers[0].window == 2
    assert answers[0].score == pytest.approx(softmax_prob(long_windows, 2, logits, 0) ** 2, rel=1e-6)


def test_answer_in_the_last_window_maps_to_the_right_characters(long_windows):
    last = long_windows.input_ids.shape[0] - 1
    char = LONG_CONTEXT.index("Zanzibar")
    assert LONG_CONTEXT.count("Zanzibar") == 1
    s = token_of(long_windows, last, char)
    e = token_of(long_windows, last, char + len("Zanzibar") - 1)
    start, end = peak_logits(long_windows, {(last, s): 9.0}), peak_logits(long_windows, {(last, e): 9.0})
    answer = decode_answers(long_windows, start, end)[0]
    assert (answer.answer, answer.start, answer.end, answer.window) == ("Zanzibar", char, char + 8, last)


def test_a_span_seen_in_two_overlapping_windows_is_reported_once_with_its_best_score(long_windows):
    # The last context token of window 0 is also in window 1 (the windows share 16 tokens).
    t0 = context_positions(long_windows, 0)[-2]
    span = long_windows.offsets[0][t0]
    t1 = token_of(long_windows, 1, span[0])
    assert long_windows.offsets[1][t1] == span
    start = peak_logits(long_windows, {(0, t0): 6.0, (1, t1): 7.0})
    answers = decode_answers(long_windows, start, start, top_k=10)
    matching = [x for x in answers if x.start_token >= 0 and long_windows.offsets[x.window][x.start_token] == span]
    assert len({(x.start, x.end) for x in answers}) == len(answers)
    assert answers[0].window == 1  # the higher-scored occurrence
    assert len([x for x in answers if (x.start, x.end) == (answers[0].start, answers[0].end)]) == 1
    assert matching[0] is answers[0]


def test_answer_span_has_the_pipeline_fields(short_windows):
    logits = peak_logits(short_windows, {})
    answer = decode_answers(short_windows, logits, logits)[0]
    assert isinstance(answer, AnswerSpan)
    assert isinstance(answer.score, float) and isinstance(answer.start, int) and isinstance(answer.end, int)


# ---------------------------------------------------------------- input checks and notices


@pytest.mark.parametrize("question, context", [("", "Some context."), ("   ", "Some context."), ("Who?", " \n\t ")])
def test_empty_or_whitespace_text_is_rejected(tok, question, context):
    with pytest.raises(RplnError):
        make_qa_windows(tok, question, context)


def test_max_seq_len_smaller_than_the_question_is_rejected_with_a_clear_message(tok):
    with pytest.raises(RplnError, match="max_seq_len=8 is too small"):
        make_qa_windows(tok, QUESTION, "The king wrote the letter.", max_seq_len=8)


def test_long_question_is_truncated_to_max_question_len_with_a_notice(tok):
    question = "Who wrote the letter to the king about the war and the economy of France?"
    windows = make_qa_windows(tok, question, "The king wrote the letter.", max_question_len=6)
    assert len(tok(windows.question, add_special_tokens=False)["input_ids"]) <= 6
    assert question.startswith(windows.question)
    assert any("question truncated" in notice for notice in windows.notices)


def test_model_limit_caps_max_seq_len_with_a_notice(tok):
    windows = make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=384, model_max_tokens=40)
    assert windows.input_ids.shape[1] <= 40
    assert any("model's limit" in notice for notice in windows.notices)


def test_stride_is_lowered_when_the_question_leaves_little_room(tok):
    # 14 - 6 question tokens - 4 specials = 4 context tokens per window, so the overlap must drop to 3.
    context = " ".join(SAMPLE_TEXT)
    windows = make_qa_windows(tok, QUESTION, context, max_seq_len=14, doc_stride=16)
    assert len(tok(QUESTION, add_special_tokens=False)["input_ids"]) == 6
    assert windows.notices == ["doc_stride lowered from 16 to 3 to fit windows of 14 tokens."]
    ids = windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(windows, w)] for w in range(len(ids))]
    assert all(previous[-3:] == following[:3] for previous, following in zip(pieces, pieces[1:]))


def test_logits_of_the_wrong_shape_are_rejected(short_windows):
    with pytest.raises(RplnError, match="shape"):
        decode_answers(short_windows, np.zeros((2, 3)), np.zeros((2, 3)))
