"""The first minute in a real browser: results are there before any click, a picker offers only models its tab can
run, an example runs when clicked, and a failed run leaves no result unmarked. Skips as tests/test_browser.py does."""

from __future__ import annotations

import time

import pytest

from tests.browser_support import VIEWPORT, expect, launched_browser
from tests.test_browser import RESULT_TIMEOUT_MS, data_rows

START_UP_BUDGET_S = 10.0  # what `python app.py` may take to serve (bench/bench_app.py); the first results too


@pytest.fixture(scope="module")
def browser(app_server):
    with launched_browser() as browser:
        yield browser


def open_page(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    return page


def test_with_no_click_the_fill_mask_tab_shows_predictions_and_views_within_the_start_up_budget(browser, app_server):
    started = time.monotonic()
    page = open_page(browser, app_server.url)
    tab = page.locator(".tabitem:visible").first
    expect(data_rows(tab)).to_have_count(5, timeout=RESULT_TIMEOUT_MS)
    expect(tab.locator(".js-plotly-plot .heatmaplayer").first).to_be_attached(timeout=RESULT_TIMEOUT_MS)
    elapsed = time.monotonic() - started
    assert "The president spoke to the" in data_rows(tab).first.inner_text()
    expect(tab.get_by_text("preln-mini reads at most 128 tokens")).to_be_visible()  # the limit, by the text box
    layer = tab.locator("input[type='number']").nth(1)  # the first number box is top k
    layer.fill("2")
    layer.press("Enter")  # this visitor's session re-draws from the shared first run
    expect(tab.get_by_text("blocks.2.attn, head 0")).to_be_visible(timeout=30_000)
    page.close()
    assert elapsed < START_UP_BUDGET_S, f"the first results took {elapsed:.1f} s"


@pytest.mark.parametrize("tab_name, offered", [
    ("Fill-mask", ["postln-mini", "preln-mini"]),
    ("Classification", ["preln-mini-sentiment"]),
    ("Question answering", ["preln-mini-qa"]),
])
def test_a_picker_offers_only_the_models_with_its_tabs_head(browser, app_server, tab_name, offered):
    page = open_page(browser, app_server.url)
    page.get_by_role("tab", name=tab_name, exact=True).click()
    tab = page.locator(".tabitem:visible").first
    tab.get_by_label("Model").first.click()
    options = page.get_by_role("option")
    expect(options).to_have_count(len(offered), timeout=30_000)
    shown = options.all_inner_texts()
    assert [text.removeprefix("✓").split(" · ")[0].strip() for text in shown] == offered  # ✓: the chosen one
    assert all("M parameters" in text for text in shown)  # labelled with their size
    page.close()


def test_clicking_an_example_runs_it(browser, app_server):
    page = open_page(browser, app_server.url)
    tab = page.locator(".tabitem:visible").first
    expect(data_rows(tab)).to_have_count(5, timeout=RESULT_TIMEOUT_MS)
    tab.get_by_role("button", name="In the beginning God created the <mask> and the earth.").click()
    expect(data_rows(tab).first).to_contain_text("In the beginning God created the", timeout=RESULT_TIMEOUT_MS)
    page.close()


def test_a_failed_run_leaves_no_result_unmarked(browser, app_server):
    page = open_page(browser, app_server.url)
    tab = page.locator(".tabitem:visible").first
    expect(data_rows(tab)).to_have_count(5, timeout=RESULT_TIMEOUT_MS)
    tab.get_by_label("Text with one or more <mask>").fill("word " * 200 + "<mask>.")
    tab.get_by_role("button", name="Predict").click()
    notice = tab.get_by_text("Not run:")
    expect(notice).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(tab).to_contain_text("A mask lies beyond the first 128 tokens")
    expect(tab).to_contain_text("The results below are still from the previous run (model preln-mini on "
                                "\u201cThe president spoke to the <mask> about the economy.\u201d)")
    assert "The president spoke to the" in data_rows(tab).first.inner_text()  # what is marked is what is shown
    page.wait_for_timeout(12_000)  # longer than a toast stays: the notice does not go with it
    expect(notice).to_be_visible()
    page.close()
