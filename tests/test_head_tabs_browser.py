"""The token tagging, multiple choice and generation tabs in a real browser, on tiny random checkpoints: each opens
with its example's results, runs on a click, shows its result and the inside views, and runs no user HTML; the
generation tab shows its text as it streams. Skips as tests/test_browser.py does."""

from __future__ import annotations

import pytest

from tests.browser_support import expect, opened_page
from tests.test_browser import (
    HOSTILE,
    RESULT_TIMEOUT_MS,
    assert_inside_views_rendered,
    data_rows,
    open_tab,
    wait_for_the_app,
)


@pytest.fixture(scope="module")
def page(head_app_server):
    with opened_page(head_app_server.url, screenshot="last-head-page.png", wait_for=wait_for_the_app) as page:
        yield page


PIECES_TEXT = "box => Array.from(box.querySelectorAll('.text'), piece => piece.textContent).join('')"


def test_token_tagging_highlights_the_typed_text_as_text(page):
    tab = open_tab(page, "Token tagging")
    # the first results come with the page
    expect(tab.locator(".js-plotly-plot .heatmaplayer").first).to_be_attached(timeout=RESULT_TIMEOUT_MS)
    tab.locator("textarea").first.fill(f"The {HOSTILE} sat in Paris.")  # the text box
    tab.get_by_role("button", name="Tag", exact=True).click()
    highlighted = tab.locator(".textfield").first  # gr.HighlightedText: each piece of text, then its label
    expect(highlighted).to_contain_text("Par", timeout=RESULT_TIMEOUT_MS)
    pieces = highlighted.evaluate(PIECES_TEXT)
    assert pieces == f"The {HOSTILE} sat in Paris."  # the typed tag shown as characters, whole
    assert tab.locator("img[src='x']").count() == 0
    expect(data_rows(tab).first).to_be_visible()  # the entities table
    assert_inside_views_rendered(tab, "token-tagging.png")
    assert page.dialogs == []


def test_multiple_choice_scores_each_choice_and_switches_the_inside_views(page):
    tab = open_tab(page, "Multiple choice")
    tab.get_by_label("Choices, one per line").fill(f"a fraction\n{HOSTILE}\nsomeone who pays taxes")
    tab.get_by_role("button", name="Score the choices").click()
    expect(data_rows(tab.locator("#choice-scores"))).to_have_count(3, timeout=RESULT_TIMEOUT_MS)
    expect(tab.get_by_text("Score of each choice")).to_be_visible()
    assert_inside_views_rendered(tab, "multiple-choice.png")
    picker = tab.get_by_role("radio", name=f"2: {HOSTILE}")  # the choice's text as text
    picker.check()
    differing = tab.locator(".textfield").first
    expect(differing).to_contain_text("onerror", timeout=RESULT_TIMEOUT_MS)  # choice 2's own input now
    assert tab.locator("img[src='x']").count() == 0 and page.dialogs == []


# Records the text of the tab's first highlighted text (the generated text) at every change of the tab: the box
# itself may be drawn anew while a run goes, so the whole tab is watched.
WATCH_TEXTS = """tab => {
    window.shownTexts = [];
    new MutationObserver(() => {
        const box = tab.querySelector('.textfield');
        if (box) window.shownTexts.push(box.innerText);
    }).observe(tab, {childList: true, subtree: true, characterData: true});
}"""


def test_generation_streams_its_text_and_shows_the_candidates_and_causal_views(page):
    tab = open_tab(page, "Generation")
    generated = tab.locator(".textfield").first
    expect(generated).to_contain_text("In the beginning", timeout=RESULT_TIMEOUT_MS)  # the first results
    tab.locator("textarea").first.fill("The president spoke to the")
    tab.evaluate(WATCH_TEXTS)
    tab.get_by_role("button", name="Generate").click()
    # The first token clears the first results' notices; they come back once the last is traced.
    expect(generated).to_contain_text("The president", timeout=RESULT_TIMEOUT_MS)
    expect(tab.get_by_text("Stopped after 20 tokens").or_(tab.get_by_text("ended the text"))).to_be_visible(
        timeout=RESULT_TIMEOUT_MS)
    shown = [text for text in page.evaluate("window.shownTexts") if text.startswith("The president")]
    assert len(set(shown)) >= 3, shown  # the text grew in steps before the last, not all at once
    expect(data_rows(tab).first).to_be_visible()  # a row per step
    expect(tab.get_by_text("top 5 next tokens at each step")).to_be_visible()
    assert_inside_views_rendered(tab, "generation.png")
    assert page.dialogs == []
