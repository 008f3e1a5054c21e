"""End to end in a real browser: each tab runs, and its results and inside-the-model views render.

Drives Debian's Chromium through Playwright. Outside CI the tests skip when no Chromium is installed;
in CI (`CI` set) a missing browser is a failure, since .ci/run installs it.
"""

from __future__ import annotations

import pytest

from rpln_core.load import load_model
from tests.browser_support import ARTIFACTS, expect, opened_page

HOSTILE = "<img src=x onerror=alert(1)>"
MODEL_VIEW_IMAGE = "img[src^='data:'], img[src*='/file=']"
RESULT_TIMEOUT_MS = 90_000  # CI's 2 cores may be busy with the rest of the suite


@pytest.fixture(scope="module")
def page(app_server):
    with opened_page(app_server.url, screenshot="last-page.png", wait_for=wait_for_the_app) as page:
        yield page


def wait_for_the_app(page):
    page.get_by_role("button", name="Predict").wait_for(timeout=60_000)


def data_rows(tab):
    """Visible table rows that are not header rows (Gradio's table keeps data rows outside <tbody>)."""
    return tab.get_by_role("row").filter(has_not=tab.page.get_by_role("columnheader"))


def open_tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()  # "Classification", not "Token classification"
    return page.locator(".tabitem:visible").first


def assert_inside_views_rendered(panel, screenshot: str):
    """Plotly drew real SVG for the charts and the model-view image has pixels."""
    expect(panel.locator(".js-plotly-plot .heatmaplayer").first).to_be_attached(timeout=RESULT_TIMEOUT_MS)
    assert panel.locator(".js-plotly-plot").count() >= 5
    image = panel.locator(MODEL_VIEW_IMAGE).first
    image.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert image.evaluate("img => img.naturalWidth") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    panel.page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)


def test_fill_mask_tab_shows_predictions_and_views_and_runs_no_user_html(page):
    tab = open_tab(page, "Fill-mask")
    tab.get_by_label("Text with one or more <mask>").fill(f"The {HOSTILE} sat on the <mask>.")
    tab.get_by_role("button", name="Predict").click()
    rows = data_rows(tab)
    # The tab opened with its example's results: wait for this run's, whose sequence column shows the tag as text.
    expect(rows.first).to_contain_text(HOSTILE, timeout=RESULT_TIMEOUT_MS)
    expect(rows).to_have_count(5)
    assert tab.locator("img[src='x']").count() == 0
    assert_inside_views_rendered(tab, "fill-mask.png")
    assert page.dialogs == []


def test_classification_tab_shows_label_scores(page):
    tab = open_tab(page, "Classification")
    tab.get_by_role("button", name="Classify").click()
    for label in ("negative", "positive"):
        expect(data_rows(tab).filter(has_text=label)).to_have_count(1, timeout=RESULT_TIMEOUT_MS)
    assert_inside_views_rendered(tab, "classification.png")


def test_qa_tab_highlights_an_answer_and_escapes_the_context(page):
    tab = open_tab(page, "Question answering")
    tab.get_by_label("Context").fill(f"The king {HOSTILE} wrote the letter in 1790.")
    tab.get_by_role("button", name="Answer").click()
    # Shown as text, not turned into an element (the tab opened with its example's answer: wait for this one).
    expect(tab.locator(".qa-context").first).to_contain_text(HOSTILE, timeout=RESULT_TIMEOUT_MS)
    mark = tab.locator("mark").first
    assert mark.inner_text().strip()
    assert tab.locator("img[src='x']").count() == 0
    assert_inside_views_rendered(tab, "qa.png")
    assert page.dialogs == []


def test_clicking_a_model_view_thumbnail_opens_that_head(page, app_server):
    tab = open_tab(page, "Fill-mask")
    image = tab.locator(MODEL_VIEW_IMAGE).first
    image.wait_for(timeout=RESULT_TIMEOUT_MS)
    natural_width, natural_height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    config = load_model(app_server.models["fill-mask"]).config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    from viz.attention import Mosaic, thumbnail_size

    mosaic = Mosaic(layers, heads, thumbnail_size(layers, heads))  # where the labels and thumbnails are drawn
    assert (natural_width, natural_height) == mosaic.size
    # Where the image is drawn inside its element: shrunk to fit (never enlarged) and centred, as Gradio maps clicks.
    box = image.bounding_box()
    scale = min(box["width"] / natural_width, box["height"] / natural_height, 1.0)
    left = (box["width"] - natural_width * scale) / 2
    top = (box["height"] - natural_height * scale) / 2
    x0, y0, x1, y1 = mosaic.box(2, 3)  # head 3 of layer 2
    image.click(position={"x": left + (x0 + x1) / 2 * scale, "y": top + (y0 + y1) / 2 * scale})
    sliders = tab.locator("input[type='number']")
    expect(sliders.nth(1)).to_have_value("2", timeout=30_000)  # layer (the first number box is top k)
    expect(sliders.nth(2)).to_have_value("3", timeout=30_000)  # head
    expect(tab.get_by_text("blocks.2.attn, head 3")).to_be_visible(timeout=30_000)


def test_teaching_tab_compares_the_twins_runs_the_experiment_and_draws_the_curves(page):
    tab = open_tab(page, "Pre-LN vs Post-LN")
    plots = tab.locator(".js-plotly-plot:visible")
    expect(plots).to_have_count(9, timeout=RESULT_TIMEOUT_MS)  # every step of the lesson comes with the page
    tab.get_by_text("More from the comparison").click()  # predictions and entropy wait in a closed section
    tab.get_by_role("button", name="Compare").click()
    expect(data_rows(tab.locator("#compare-predictions"))).to_have_count(5, timeout=RESULT_TIMEOUT_MS)  # both top 5s
    expect(plots).to_have_count(10, timeout=RESULT_TIMEOUT_MS)  # and the entropy of both
    expect(tab.locator(".annotation-text", has_text="Self-attention")).to_have_count(2)  # both diagrams drew
    tab.get_by_role("spinbutton", name="number input for Layers").fill("6")
    tab.get_by_role("button", name="Run the experiment").click()
    drawn = tab.locator("#lesson-init-gradients .gtitle", has_text="6 layers")
    expect(drawn).to_have_count(1, timeout=RESULT_TIMEOUT_MS)
    tab.get_by_role("button", name="Switch off the outlier dimensions").click()
    # Both twins, two panels: four groups of three bars (intact, outliers off, random) are drawn.
    expect(tab.locator(".js-plotly-plot .barlayer .trace")).to_have_count(4, timeout=RESULT_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "teaching.png"), full_page=True)
    assert page.dialogs == []
