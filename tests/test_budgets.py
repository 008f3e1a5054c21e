"""Each budget refuses what exceeds it with a message naming the field, and can be raised for a notebook."""

from __future__ import annotations

import math

import pytest

from rpln_core import RplnError, budgets, classify, fill_mask


@pytest.fixture
def restore_budgets():
    before = budgets.current()
    yield
    budgets.configure(**{name: getattr(before, name) for name in before.__dataclass_fields__})


def test_a_text_past_the_budget_is_refused_naming_the_field(loaded, restore_budgets):
    budgets.configure(max_text_chars=40)
    with pytest.raises(RplnError, match=r"The text is 50 characters long; this app reads at most 40"):
        fill_mask(loaded("pre-ln", "mlm"), "<mask> " + "x" * 43)
    with pytest.raises(RplnError, match=r"second text is 41 characters"):
        classify(loaded("pre-ln", "classification"), "fine", "y" * 41)


@pytest.mark.parametrize("top_k", [0, 2.5, 10**9, math.nan, math.inf, "abc", None, True])
def test_top_k_must_be_a_whole_number_within_the_budget(loaded, top_k):
    with pytest.raises(RplnError, match=r"top_k must be a whole number from 1 to 100"):
        fill_mask(loaded("pre-ln", "mlm"), "the <mask> .", top_k=top_k)


def test_top_k_cannot_exceed_the_vocabulary(loaded, restore_budgets):
    model = loaded("pre-ln", "mlm")
    budgets.configure(max_top_k=10**6)
    with pytest.raises(RplnError, match=rf"from 1 to {len(model.tokenizer)}"):
        fill_mask(model, "the <mask> .", top_k=len(model.tokenizer) + 1)
    assert len(fill_mask(model, "the <mask> .", top_k=len(model.tokenizer)).predictions[0]) == len(model.tokenizer)


def test_masks_beyond_the_budget_are_refused(loaded, restore_budgets):
    budgets.configure(max_masks=2)
    with pytest.raises(RplnError, match="3 masks; use at most 2"):
        fill_mask(loaded("pre-ln", "mlm"), "<mask> <mask> <mask>")


def test_configure_names_unknown_budgets_and_bad_values(restore_budgets):
    with pytest.raises(RplnError, match="no budget called 'max_tokens'"):
        budgets.configure(max_tokens=5)
    with pytest.raises(RplnError, match="max_top_k must be a whole number"):
        budgets.configure(max_top_k=0)
    assert budgets.configure(max_top_k=7).max_top_k == 7
