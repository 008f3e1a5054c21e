"""Windowing and span decoding of extractive QA, checked against hand-made logits and hand-computed scores.

The default rules are transformers 4.57.6's (tests/test_qa_4x.py compares them with the real pipeline); the tests
here state each rule on its own, and the opt-in rules beside the 4.x rule they replace."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rpln_core import budgets
from rpln_core.errors import RplnError
from rpln_core.synthetic import SAMPLE_TEXT, build_tokenizer
from rpln_core.tasks.qa_spans import AnswerSpan, QAWindows, count_windows, decode_answers, make_qa_windows

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


# Two windows at max_seq_len=48, doc_stride=16: the overlap is shared by exactly two windows.
TWO_WINDOW_CONTEXT = " ".join(SAMPLE_TEXT[:2])


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(SAMPLE_TEXT + EXTRA_TEXT, vocab_size=400)


@pytest.fixture(scope="module")
def long_windows(tok) -> QAWindows:
    return make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48, doc_stride=16)


@pytest.fixture
def limits():
    """budgets.configure for one test; the limits in force before are restored after it."""
    saved = budgets.current()
    yield budgets.configure
    budgets.configure(**{name: getattr(saved, name) for name in saved.__dataclass_fields__})


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


def text_of(tok, token_id: int) -> str:
    return tok.convert_tokens_to_string([tok.convert_ids_to_tokens(token_id)])


# ---------------------------------------------------------------- windows


def test_long_context_is_split_into_several_windows_of_at_most_max_seq_len(long_windows):
    assert long_windows.count >= 5
    assert long_windows.input_ids.shape[1] <= 48
    assert long_windows.input_ids.dtype == torch.long
    assert long_windows.attention_mask.shape == long_windows.input_ids.shape
    assert long_windows.lengths == long_windows.attention_mask.sum(dim=1).tolist()
    assert long_windows.notices == []


def test_every_window_starts_with_cls_question_and_two_separators(tok, long_windows):
    question_ids = tok(QUESTION, add_special_tokens=False)["input_ids"]
    prefix = [tok.cls_token_id] + question_ids + [tok.sep_token_id, tok.sep_token_id]
    for row in long_windows.input_ids.tolist():
        assert row[: len(prefix)] == prefix


def test_windows_overlap_by_the_stride_and_together_cover_every_context_token(tok, long_windows):
    ids = long_windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(long_windows, w)] for w in range(len(ids))]
    for previous, following in itertools.pairwise(pieces):
        assert previous[-16:] == following[:16]  # doc_stride=16 tokens shared by consecutive windows
    stitched = pieces[0] + [token for piece in pieces[1:] for token in piece[16:]]
    assert stitched == tok(LONG_CONTEXT, add_special_tokens=False)["input_ids"]


def test_only_the_last_window_is_padded_and_padding_is_masked(tok, long_windows):
    ids, mask = long_windows.input_ids, long_windows.attention_mask
    is_pad = ids == tok.pad_token_id
    assert not is_pad[:-1].any()
    assert torch.equal(mask.bool(), ~is_pad)


def test_allowed_marks_context_tokens_only(tok, long_windows):
    for w in range(long_windows.count):
        for t, sid in enumerate(long_windows.encoding.sequence_ids(w)):
            if sid != 1:  # question, <s>, </s>, padding
                assert not long_windows.allowed[w, t]
                assert long_windows.offsets[w][t] == (0, 0)
            else:
                assert long_windows.allowed[w, t]
        assert not long_windows.allowed[w, 0]  # <s> is never a context token


def test_text_tokens_have_offsets_pointing_at_their_text_in_the_context(tok, long_windows):
    for w in range(long_windows.count):
        for t in np.flatnonzero(long_windows.allowed[w] & ~long_windows.blank[w]):
            s, e = long_windows.offsets[w][t]
            assert 0 <= s < e <= len(LONG_CONTEXT)
            assert LONG_CONTEXT[s:e] == text_of(tok, int(long_windows.input_ids[w, t])).lstrip(" ")


def test_blank_marks_context_tokens_holding_only_whitespace(tok):
    context = "The king  wrote\tthe\n\nletter."
    windows = make_qa_windows(tok, QUESTION, context)
    blank = [t for t in context_positions(windows, 0) if windows.blank[0, t]]
    assert blank, "the double space, tab and newlines give whitespace-only tokens"
    for t in context_positions(windows, 0):
        s, e = windows.offsets[0][t]
        assert windows.blank[0, t] == (context[s:e].strip() == "")
        if windows.blank[0, t]:
            assert text_of(tok, int(windows.input_ids[0, t])).strip() == ""


def test_emoji_rtl_zero_width_and_control_chars_keep_offsets_into_the_original_string(tok):
    windows = make_qa_windows(tok, QUESTION, WEIRD_CONTEXT, max_seq_len=40, doc_stride=8)
    assert windows.count > 1
    covered = set()
    for w in range(windows.count):
        word_ids = windows.encoding.word_ids(w)
        tokens_by_word: dict[int, list[int]] = {}
        for t in np.flatnonzero(windows.allowed[w] & ~windows.blank[w]):
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
    # Every visible character (everything but whitespace) is covered by some text token.
    assert {i for i, ch in enumerate(WEIRD_CONTEXT) if not ch.isspace()} <= covered


@pytest.mark.parametrize("word", ["😀👍🏽", "مرحبا", "بالعالم", "\x00\x07\x1b", "letter"])
def test_answers_over_unusual_characters_map_back_to_the_same_characters(tok, word):
    windows = make_qa_windows(tok, QUESTION, WEIRD_CONTEXT, max_seq_len=40, doc_stride=8)
    char = WEIRD_CONTEXT.index(word)
    w = next(w for w in range(windows.count) if any(
        windows.offsets[w][t][0] <= char < windows.offsets[w][t][1] for t in context_positions(windows, w)))
    first = token_of(windows, w, char)
    last = token_of(windows, w, char + len(word) - 1)
    start = peak_logits(windows, {(w, first): 10.0})
    end = peak_logits(windows, {(w, last): 10.0})
    answer = decode_answers(windows, start, end)[0]
    assert (answer.answer, answer.start, answer.end) == (word, char, char + len(word))
    assert WEIRD_CONTEXT[answer.start : answer.end] == word


# ---------------------------------------------------------------- window size and stride, as 4.x chose them


def test_without_max_seq_len_windows_take_the_tokenizers_limit_up_to_384(tok):
    context = " ".join(SAMPLE_TEXT * 4)
    tok_40 = build_tokenizer(SAMPLE_TEXT + EXTRA_TEXT, vocab_size=400)
    tok_40.model_max_length = 40
    assert make_qa_windows(tok_40, QUESTION, context).input_ids.shape[1] == 40
    assert tok.model_max_length > 384  # "no limit": 4.x then read 384 tokens at a time
    assert make_qa_windows(tok, QUESTION, context * 3).input_ids.shape[1] == 384


def test_without_doc_stride_windows_share_half_a_window_at_most_128_tokens(tok):
    windows = make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48)
    assert windows.doc_stride == 24
    ids = windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(windows, w)] for w in range(windows.count)]
    assert pieces[0][-24:] == pieces[1][:24] and pieces[0][-25:] != pieces[1][:25]
    assert make_qa_windows(tok, QUESTION, LONG_CONTEXT * 2, max_seq_len=384).doc_stride == 128


def test_a_given_doc_stride_above_half_a_window_is_used_as_given(tok):
    # 4.x capped the stride at half a window only when the caller gave none: doc_stride=100 of 128 stays 100.
    windows = make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=128, doc_stride=100)
    assert windows.doc_stride == 100 and windows.notices == []
    ids = windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(windows, w)] for w in range(windows.count)]
    assert all(previous[-100:] == following[:100] for previous, following in itertools.pairwise(pieces))


@pytest.mark.parametrize("max_seq_len, doc_stride", [(48, 16), (48, 0), (30, 19), (64, 40), (128, 100)])
def test_count_windows_predicts_how_many_windows_the_tokenizer_makes(tok, limits, max_seq_len, doc_stride):
    limits(max_windows=10_000)
    for sentences in (1, 3, 9, 20):
        context = " ".join((SAMPLE_TEXT * 3)[:sentences])
        windows = make_qa_windows(tok, QUESTION, context, max_seq_len=max_seq_len, doc_stride=doc_stride)
        question = len(tok(QUESTION, add_special_tokens=False)["input_ids"])
        room = max_seq_len - question - tok.num_special_tokens_to_add(pair=True)
        n = len(tok(context, add_special_tokens=False)["input_ids"])
        assert count_windows(n, room, doc_stride) == windows.count


def test_a_given_doc_stride_larger_than_max_seq_len_is_refused_naming_it(tok):
    with pytest.raises(RplnError, match="doc_stride=40 is larger than max_seq_len=32"):
        make_qa_windows(tok, QUESTION, "The king wrote the letter.", max_seq_len=32, doc_stride=40)


def test_a_given_doc_stride_the_windows_cannot_advance_by_is_refused_naming_it(tok):
    # 32 - 6 question tokens - 4 specials = 22 context tokens per window: a stride of 22 would never advance.
    context = " ".join(SAMPLE_TEXT[:3])
    with pytest.raises(RplnError, match=r"doc_stride=22 is too large.*at most 21"):
        make_qa_windows(tok, QUESTION, context, max_seq_len=32, doc_stride=22)
    assert make_qa_windows(tok, QUESTION, context, max_seq_len=32, doc_stride=21).doc_stride == 21


def test_such_a_stride_is_harmless_when_the_context_fits_in_one_window(tok):
    windows = make_qa_windows(tok, QUESTION, "The king wrote the letter.", max_seq_len=32, doc_stride=30)
    assert windows.count == 1 and windows.notices == []


def test_the_default_stride_is_lowered_with_a_notice_when_the_question_leaves_little_room(tok):
    # 14 - 6 question tokens - 4 specials = 4 context tokens per window; the default stride, 7, must drop to 3.
    context = " ".join(SAMPLE_TEXT[:2])
    windows = make_qa_windows(tok, QUESTION, context, max_seq_len=14)
    assert len(tok(QUESTION, add_special_tokens=False)["input_ids"]) == 6
    assert windows.notices == ["doc_stride lowered from 7 to 3: the question leaves 4 context tokens per window."]
    ids = windows.input_ids.tolist()
    pieces = [[ids[w][t] for t in context_positions(windows, w)] for w in range(len(ids))]
    assert all(previous[-3:] == following[:3] for previous, following in itertools.pairwise(pieces))


def test_max_seq_len_smaller_than_the_question_is_rejected_with_a_clear_message(tok):
    with pytest.raises(RplnError, match="max_seq_len=8 is too small"):
        make_qa_windows(tok, QUESTION, "The king wrote the letter.", max_seq_len=8)


def test_model_limit_caps_max_seq_len_with_a_notice(tok):
    windows = make_qa_windows(tok, QUESTION, " ".join(SAMPLE_TEXT), max_seq_len=384, model_max_tokens=40)
    assert windows.input_ids.shape[1] <= 40
    assert windows.notices == ["max_seq_len lowered from 384 to 40, the model's limit."]


def test_a_question_longer_than_max_question_len_is_read_whole_as_4x_did(tok):
    question = "Who wrote the letter to the king about the war and the economy of France?"
    windows = make_qa_windows(tok, question, "The king wrote the letter.", max_question_len=6)
    assert windows.question == question and windows.notices == []


def test_truncate_question_opts_in_to_cutting_it_to_max_question_len_with_a_notice(tok):
    question = "Who wrote the letter to the king about the war and the economy of France?"
    windows = make_qa_windows(tok, question, "The king wrote the letter.", max_question_len=6, truncate_question=True)
    assert len(tok(windows.question, add_special_tokens=False)["input_ids"]) <= 6
    assert question.startswith(windows.question)
    assert any("question truncated" in notice for notice in windows.notices)


# ---------------------------------------------------------------- budgets and input checks


@pytest.mark.parametrize("question, context", [("", "Some context."), ("   ", "Some context."), ("Who?", " \n\t ")])
def test_empty_or_whitespace_text_is_rejected(tok, question, context):
    with pytest.raises(RplnError):
        make_qa_windows(tok, question, context)


class NeverCalled:
    """A tokenizer that fails the test if anything asks it to tokenize."""

    is_fast = True

    def __call__(self, *args, **kwargs):
        raise AssertionError("the tokenizer was called")


def test_a_context_over_max_context_chars_is_refused_before_any_tokenizing(limits):
    limits(max_context_chars=1_000)
    with pytest.raises(RplnError, match=r"The context is 1,001 characters long; this app reads at most 1,000"):
        make_qa_windows(NeverCalled(), QUESTION, "x" * 1_001)
    with pytest.raises(RplnError, match="context is 5,000,000 characters"):
        make_qa_windows(NeverCalled(), QUESTION, "word " * 1_000_000)


def test_a_question_over_max_text_chars_is_refused_before_any_tokenizing(limits):
    limits(max_text_chars=100)
    with pytest.raises(RplnError, match="The question is 101 characters long"):
        make_qa_windows(NeverCalled(), "?" * 101, "Some context.")


def test_a_context_needing_more_than_max_windows_is_refused_saying_how_many_and_how_to_fit(tok, limits):
    needed = make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48, doc_stride=16).count
    limits(max_windows=needed - 1)
    with pytest.raises(RplnError, match=rf"needs {needed} windows of 48 tokens.*at most {needed - 1}") as refusal:
        make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48, doc_stride=16)
    assert "Shorten the context" in refusal.value.message and "raise max_seq_len" in refusal.value.message
    limits(max_windows=needed)
    assert make_qa_windows(tok, QUESTION, LONG_CONTEXT, max_seq_len=48, doc_stride=16).count == needed


WRONG_NUMBERS = ["64", float("nan"), 2.5, True, [64]]  # a form's string, NaN, a fraction, a bool, a list


@pytest.mark.parametrize(
    "keyword, value",
    [(keyword, value) for keyword in ("max_seq_len", "doc_stride", "max_question_len") for value in WRONG_NUMBERS]
    + [("max_question_len", None), ("max_seq_len", 0), ("doc_stride", -1)]
    + [("truncate_question", value) for value in ("True", 1, None)],
)
def test_window_keywords_of_the_wrong_type_are_refused_naming_the_keyword(tok, keyword, value):
    with pytest.raises(RplnError, match=keyword):
        make_qa_windows(tok, QUESTION, "The king wrote the letter.", **{keyword: value})


# ---------------------------------------------------------------- decoding: 4.x's rules


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


def test_question_separators_and_padding_never_bound_an_answer_however_high_their_logits(long_windows):
    n, seq = long_windows.input_ids.shape
    rng = np.random.default_rng(0)
    start = rng.normal(size=(n, seq)).astype(np.float32)
    end = rng.normal(size=(n, seq)).astype(np.float32)
    outside = ~long_windows.allowed
    outside[:, 0] = False  # <s> carries the null score: leave it ordinary
    start[outside] = end[outside] = 100.0
    answers = decode_answers(long_windows, start, end, top_k=20)
    assert len(answers) == 20
    for x in answers:
        assert long_windows.allowed[x.window, x.start_token] and long_windows.allowed[x.window, x.end_token]
        assert x.answer == LONG_CONTEXT[x.start : x.end] != ""


def test_align_to_words_widens_a_subword_to_its_whole_word(short_windows):
    context = short_windows.context
    word_start = context.index("France")
    t = token_of(short_windows, 0, word_start + 3)  # a piece inside "France" ("Fr" + "an" + "ce")
    assert short_windows.offsets[0][t][0] > word_start
    logits = peak_logits(short_windows, {(0, t): 9.0})
    aligned = decode_answers(short_windows, logits, logits)[0]
    raw = decode_answers(short_windows, logits, logits, align_to_words=False)[0]
    assert (aligned.answer, aligned.start) == ("France", word_start)
    assert raw.answer == context[slice(*short_windows.offsets[0][t])] != "France"


def test_token_spans_widened_to_the_same_word_are_one_answer_with_their_scores_summed(short_windows):
    context = short_windows.context
    word_start = context.index("France")
    first, piece = token_of(short_windows, 0, word_start), token_of(short_windows, 0, word_start + 3)
    assert first != piece  # "France" is several tokens, so (first, piece) and (piece, piece) are both "France"
    start = peak_logits(short_windows, {(0, first): 9.0, (0, piece): 8.0})
    end = peak_logits(short_windows, {(0, piece): 9.0})
    answers = decode_answers(short_windows, start, end, top_k=2, align_to_words=True)
    france = [x for x in answers if x.answer == "France"]
    assert len(france) == 1 and answers[0] is france[0]
    assert (france[0].start_token, france[0].end_token) == (first, piece)  # the first found: the best pair

    def score(s, e):
        return softmax_prob(short_windows, 0, start, s) * softmax_prob(short_windows, 0, end, e)

    # 4.x draws top_k * 2 + 10 = 14 candidate pairs per window; the answer sums those that widen to "France".
    tokens = context_positions(short_windows, 0)
    pairs = sorted(((score(s, e), s, e) for s in tokens for e in tokens if 0 <= e - s < 15), reverse=True)[:14]
    inside = range(word_start, word_start + len("France"))
    offsets = short_windows.offsets[0]
    summed = sum(x for x, s, e in pairs if offsets[s][0] in inside and offsets[e][0] in inside)
    assert summed > score(first, piece) + score(piece, piece)
    assert france[0].score == pytest.approx(summed, rel=1e-5)


def test_equal_texts_in_different_case_are_one_answer_at_the_first_found_position(tok):
    context = "Paris is big. paris is old. PARIS is far."
    windows = make_qa_windows(tok, QUESTION, context)
    lower, upper = token_of(windows, 0, context.index("paris")), token_of(windows, 0, context.index("PARIS"))
    assert (context[slice(*windows.offsets[0][lower])], context[slice(*windows.offsets[0][upper])]) == ("p", "P")
    logits = peak_logits(windows, {(0, lower): 5.0, (0, upper): 6.0})
    # One-token answers without word alignment: with top_k=2, 4.x's two candidates are (P, P), then (p, p).
    one_token = {"align_to_words": False, "max_answer_len": 1, "top_k": 2}
    answers = decode_answers(windows, logits, logits, **one_token)
    assert (answers[0].answer, answers[0].start) == ("P", context.index("PARIS"))  # the first found: the best
    expected = sum(softmax_prob(windows, 0, logits, t) ** 2 for t in (upper, lower))
    assert answers[0].score == pytest.approx(expected, rel=1e-5)
    assert all(x.answer.lower() != "p" for x in answers[1:])


def test_a_span_seen_in_two_overlapping_windows_is_one_answer_scoring_their_sum(tok):
    windows = make_qa_windows(tok, QUESTION, TWO_WINDOW_CONTEXT, max_seq_len=48, doc_stride=16)
    assert windows.count == 2
    t0 = context_positions(windows, 0)[-2]  # inside the 16 tokens both windows hold
    span = windows.offsets[0][t0]
    t1 = token_of(windows, 1, span[0])
    assert windows.offsets[1][t1] == span
    logits = peak_logits(windows, {(0, t0): 6.0, (1, t1): 7.0})
    # One candidate per window (top_k=1 without alignment): the peak of each, the same characters twice.
    answer = decode_answers(windows, logits, logits, align_to_words=False)[0]
    assert (answer.start, answer.end) == span
    assert answer.window == 0 and answer.start_token == t0  # where it was found first
    both = softmax_prob(windows, 0, logits, t0) ** 2 + softmax_prob(windows, 1, logits, t1) ** 2
    assert answer.score == pytest.approx(both, rel=1e-5)


def test_a_whitespace_token_may_start_an_answer_which_then_begins_at_a_space(tok):
    context = "The king  wrote the letter."
    windows = make_qa_windows(tok, QUESTION, context)
    wrote = token_of(windows, 0, context.index("wrote"))
    space = wrote - 1  # the lone space token of "  wrote": no text of its own (empty offsets)
    assert windows.blank[0, space] and windows.allowed[0, space]
    start = peak_logits(windows, {(0, space): 9.0})
    end = peak_logits(windows, {(0, wrote): 9.0})
    best = decode_answers(windows, start, end)[0]
    assert (best.answer, best.start, best.start_token) == (" wrote", context.index(" wrote"), space)


def test_a_short_context_can_give_zero_score_filler_answers_when_top_k_asks_for_more(tok):
    windows = make_qa_windows(tok, "Why?", "Freedom.")
    rng = np.random.default_rng(0)
    start, end = (rng.normal(size=tuple(windows.input_ids.shape)).astype(np.float32) for _ in range(2))
    seq = windows.lengths[0]
    top_k = 80  # 4.x's 2 * 80 + 10 candidates cover all 13 x 13 pairs, so which zero scores come back is fixed
    assert top_k * 2 + 10 >= seq * seq
    answers = decode_answers(windows, start, end, top_k=top_k)
    real = [x for x in answers if x.score > 0]
    filler = [x for x in answers if x.score == 0]
    assert {x.answer for x in real} == {"Freedom", "Freedom.", "."}
    assert filler and answers == real + filler  # the zero scores come last
    # 4.x kept spans starting on <s> (token 0) with plain offsets: from character 0 to the end token's end.
    ends = {windows.offsets[0][e][1] for e in context_positions(windows, 0)}
    assert {"Freedom."[:end] for end in ends} - {"Freedom", "Freedom."} <= {x.answer for x in filler}
    assert "" in {x.answer for x in filler}  # a span ending before it starts, or on <s>


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
    assert all(x.start_token >= 0 for x in answers)


def test_null_score_is_the_minimum_over_windows(long_windows):
    logits = peak_logits(long_windows, {(w, 0): 12.0 for w in range(long_windows.count)})
    logits[2, 0] = 9.0  # window 2 is the least sure the question is unanswerable
    answers = decode_answers(long_windows, logits, logits, handle_impossible_answer=True)
    assert answers[0].answer == ""
    assert answers[0].window == 2
    assert answers[0].score == pytest.approx(softmax_prob(long_windows, 2, logits, 0) ** 2, rel=1e-6)


def test_answer_in_the_last_window_maps_to_the_right_characters(long_windows):
    last = long_windows.count - 1
    char = LONG_CONTEXT.index("Zanzibar")
    assert LONG_CONTEXT.count("Zanzibar") == 1
    s = token_of(long_windows, last, char)
    e = token_of(long_windows, last, char + len("Zanzibar") - 1)
    start, end = peak_logits(long_windows, {(last, s): 9.0}), peak_logits(long_windows, {(last, e): 9.0})
    answer = decode_answers(long_windows, start, end)[0]
    assert (answer.answer, answer.start, answer.end, answer.window) == ("Zanzibar", char, char + 8, last)


def test_answer_span_has_the_pipeline_fields(short_windows):
    logits = peak_logits(short_windows, {})
    answer = decode_answers(short_windows, logits, logits)[0]
    assert isinstance(answer, AnswerSpan)
    assert isinstance(answer.score, float) and isinstance(answer.start, int) and isinstance(answer.end, int)


def test_logits_of_the_wrong_shape_are_rejected(short_windows):
    with pytest.raises(RplnError, match="shape"):
        decode_answers(short_windows, np.zeros((2, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize("value", ["3", float("nan"), 2.5, True, 0, 10**9])
def test_a_top_k_that_is_not_a_whole_number_within_the_budget_is_refused_naming_it(short_windows, value):
    logits = peak_logits(short_windows, {})
    with pytest.raises(RplnError, match="top_k must be a whole number from 1 to 100"):
        decode_answers(short_windows, logits, logits, top_k=value)


@pytest.mark.parametrize("keyword, value", [("max_answer_len", "15"), ("max_answer_len", 1.5), ("max_answer_len", 0),
                                            ("handle_impossible_answer", "False"), ("align_to_words", 1),
                                            ("one_answer_per_span", None), ("text_spans_only", "yes")])
def test_decoding_keywords_of_the_wrong_type_are_refused_naming_them(short_windows, keyword, value):
    logits = peak_logits(short_windows, {})
    with pytest.raises(RplnError, match=keyword):
        decode_answers(short_windows, logits, logits, **{keyword: value})


# ---------------------------------------------------------------- opt-in rules that differ from 4.x


def test_one_answer_per_span_keeps_each_character_span_once_with_its_best_score(tok):
    windows = make_qa_windows(tok, QUESTION, TWO_WINDOW_CONTEXT, max_seq_len=48, doc_stride=16)
    t0 = context_positions(windows, 0)[-2]
    t1 = token_of(windows, 1, windows.offsets[0][t0][0])
    logits = peak_logits(windows, {(0, t0): 6.0, (1, t1): 7.0})
    answers = decode_answers(windows, logits, logits, top_k=10, one_answer_per_span=True)
    assert len({(x.start, x.end) for x in answers}) == len(answers)
    assert (answers[0].window, answers[0].start_token) == (1, t1)  # the higher-scored occurrence
    assert answers[0].score == pytest.approx(softmax_prob(windows, 1, logits, t1) ** 2, rel=1e-5)


def test_one_answer_per_span_keeps_equal_texts_in_different_case_apart(tok):
    context = "Paris is big. paris is old. PARIS is far."
    windows = make_qa_windows(tok, QUESTION, context)
    lower, upper = token_of(windows, 0, context.index("paris")), token_of(windows, 0, context.index("PARIS"))
    logits = peak_logits(windows, {(0, lower): 5.0, (0, upper): 6.0})
    answers = decode_answers(windows, logits, logits, align_to_words=False, max_answer_len=1, top_k=2,
                             one_answer_per_span=True)
    assert [(x.answer, x.start) for x in answers] == [("P", context.index("PARIS")), ("p", context.index("paris"))]
    assert answers[0].score == pytest.approx(softmax_prob(windows, 0, logits, upper) ** 2, rel=1e-5)


def test_text_spans_only_never_bounds_an_answer_by_cls_or_whitespace_even_with_the_highest_logits(long_windows):
    n, seq = long_windows.input_ids.shape
    rng = np.random.default_rng(0)
    start = rng.normal(size=(n, seq)).astype(np.float32)
    end = rng.normal(size=(n, seq)).astype(np.float32)
    text = long_windows.allowed & ~long_windows.blank
    assert long_windows.blank.any()  # the tiny vocabulary has no " Par": " Paris" is a lone space, "Par", "is"
    high = ~text
    high[:, 0] = False  # <s> carries the null score: at 100 every other probability underflows float32 to 0
    start[high] = end[high] = 100.0  # question, </s>, padding, lone spaces
    answers = decode_answers(long_windows, start, end, top_k=20, text_spans_only=True)
    assert len(answers) == 20
    for x in answers:
        assert text[x.window, x.start_token] and text[x.window, x.end_token]
        assert x.answer == LONG_CONTEXT[x.start : x.end] == x.answer.strip() != ""


def test_text_spans_only_gives_no_zero_score_filler(tok):
    windows = make_qa_windows(tok, "Why?", "Freedom.")
    rng = np.random.default_rng(0)
    start, end = (rng.normal(size=tuple(windows.input_ids.shape)).astype(np.float32) for _ in range(2))
    answers = decode_answers(windows, start, end, top_k=20, text_spans_only=True)
    assert [x.answer for x in answers] == [x.answer for x in decode_answers(windows, start, end, top_k=20)][:3]
    assert all(x.score > 0 for x in answers)


def test_answerable_marks_whitespace_tokens_only_under_4x_rules(tok):
    windows = make_qa_windows(tok, QUESTION, "The king  wrote\tthe letter.")
    assert windows.blank.any()
    assert np.array_equal(windows.answerable(), windows.allowed)
    assert np.array_equal(windows.answerable(text_spans_only=True), windows.allowed & ~windows.blank)
