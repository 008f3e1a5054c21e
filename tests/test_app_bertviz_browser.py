"""bertviz's views inside the running app, in Chromium with the network cut: every request that does not go to the
app's own server (or is data:, blob:, about:, file:) is aborted and recorded, and the tests check that none was
tried, no script failed and no dialog opened. The downloads are opened offline from disk.

Drives Debian's Chromium through Playwright; outside CI the tests skip when no Chromium is installed, as in
tests/test_browser.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser_support import ARTIFACTS, VIEWPORT, expect, launched_browser

HOSTILE = "<img src=x onerror=alert(1)> </script>"
LOCAL_SCHEMES = {"data", "blob", "about", "file"}
RESULT_TIMEOUT_MS = 90_000  # CI's 2 cores may be busy with the rest of the suite
DRAWN_MS = 20_000

pytest.importorskip("bertviz", reason="bertviz is not installed (pip install bertviz==1.4.1)")


@pytest.fixture(scope="module")
def browser(app_server):
    """A browser context whose requests may reach only the app's server; what else is tried is recorded."""
    server = urlsplit(app_server.url).netloc
    with launched_browser() as browser:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.left = []

        def leaves(url: str) -> bool:
            parts = urlsplit(url)
            return parts.scheme not in LOCAL_SCHEMES and parts.netloc != server

        # Only what would leave is routed (and aborted): routing the app's own requests too would keep Chromium
        # from treating a download as one.
        context.route(leaves, lambda route: (context.left.append(route.request.url), route.abort()))
        try:
            yield context
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser, app_server):
    page = browser.new_page()
    page.errors, page.dialogs = [], []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app_server.url, wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("button", name="Predict").wait_for(timeout=60_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-bertviz-last.png"), full_page=True)


@pytest.fixture(autouse=True)
def nothing_left_and_nothing_ran(browser, page):
    yield
    assert browser.left == [], "a request tried to leave the server"
    assert (page.errors, page.dialogs) == ([], []), "a script failed or user text ran as code"


def open_tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()
    return page.locator(".tabitem:visible").first


def run_and_open_bertviz(page, tab_name: str, fill: dict[str, str], button: str):
    """Run a task tab on `fill` (label -> text) and open its bertviz tab; the tab's locator."""
    tab = open_tab(page, tab_name)
    for label, text in fill.items():
        tab.get_by_label(label).first.fill(text)  # "Text" matches "Second text" too, after it
    tab.get_by_role("button", name=button).click()
    tab.get_by_role("tab", name="bertviz").click()
    return tab


def view_frame(tab, title: str):
    """The bertviz iframe once it shows `title` ("head view", …), and its frame."""
    element = tab.locator(f"iframe[title='bertviz {title}']")
    element.wait_for(timeout=RESULT_TIMEOUT_MS)
    frame = element.content_frame
    frame.locator("#vis svg").first.wait_for(state="attached", timeout=DRAWN_MS)
    return frame


@pytest.fixture(scope="module")
def fill_mask_tab(page):
    tab = run_and_open_bertviz(page, "Fill-mask", {"Text with one or more <mask>": f"The {HOSTILE} sat on the <mask>."},
                               "Predict")
    expect(tab.get_by_role("button", name="Download this head view")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    # The run's head view replaces the one the page opened with; wait until it shows the typed text.
    expect(view_frame(tab, "head view").locator("#vis svg text").filter(has_text="sat").first).to_be_attached(
        timeout=DRAWN_MS)
    return tab


def test_the_head_view_draws_a_line_per_head_query_and_key_with_the_typed_text_as_text(fill_mask_tab):
    frame = view_frame(fill_mask_tab, "head view")
    frame.locator("#vis svg line").first.wait_for(state="attached", timeout=DRAWN_MS)
    shown = frame.locator("#vis svg text").all_text_contents()  # the tokens, twice: the left and right columns
    n = len(shown) // 2
    assert shown[:n] == shown[n:] and shown[0] == "<s>" and "<img" in "".join(shown)  # the typed tag, as text
    assert frame.locator("#vis svg line").count() == 4 * n * n  # preln-mini's 4 heads, every query and key
    assert frame.locator("img").count() == 0 and fill_mask_tab.page.locator("img[src='x']").count() == 0


def test_the_model_view_draws_a_thumbnail_per_layer_and_head(fill_mask_tab):
    fill_mask_tab.get_by_label("Model view").check()
    frame = view_frame(fill_mask_tab, "model view")
    assert frame.locator(".attn_background").count() == 4 * 4  # preln-mini: 4 layers × 4 heads
    expect(fill_mask_tab.get_by_label("Layer", exact=True)).to_be_hidden()  # the model view takes no pickers


def test_the_neuron_view_shows_query_key_and_product_for_a_clicked_token(fill_mask_tab):
    fill_mask_tab.get_by_label("Neuron view").check()
    frame = view_frame(fill_mask_tab, "neuron view")
    token = frame.locator("#collapsed #leftText g").nth(2)
    token.hover()
    token.locator("rect").nth(1).click(force=True)  # the ⊕ that expands the token
    frame.locator("#expanded #leftText g").nth(2).hover()
    assert frame.locator("#expanded").get_attribute("visibility") == "visible"
    n = frame.locator("#expanded #leftText g").count()
    assert n > 0 and frame.locator("#queries .vector").count() == n and frame.locator("#keys .vector").count() == n
    assert frame.locator("#product .vector").count() == n
    headings = " ".join(frame.locator("#heading text").all_text_contents())
    for heading in ("Query q", "Key k", "q × k (elementwise)"):
        assert heading in headings
    ARTIFACTS.mkdir(exist_ok=True)
    fill_mask_tab.page.screenshot(path=str(ARTIFACTS / "app-bertviz-neuron.png"))


def test_the_layer_and_head_pickers_move_the_neuron_view(fill_mask_tab):
    head = fill_mask_tab.get_by_label("number input for Head").locator("visible=true")
    head.fill("3")
    head.press("Enter")
    frame = fill_mask_tab.locator("iframe[title='bertviz neuron view']").content_frame
    expect(frame.locator("#att_head")).to_have_value("3", timeout=DRAWN_MS)


def test_a_downloaded_view_opens_offline_and_draws(fill_mask_tab, browser, tmp_path):
    button = fill_mask_tab.get_by_role("button", name="Download this neuron view")
    button.scroll_into_view_if_needed()
    fill_mask_tab.page.wait_for_timeout(500)  # the page settles around the new view (a click may miss a moving button)
    with fill_mask_tab.page.expect_download(timeout=RESULT_TIMEOUT_MS) as download:
        button.click()
    name = download.value.suggested_filename
    assert name.startswith("preln-mini_the-img-src-x-onerror-alert-1-script-sat_") and name.endswith("-neuron-view.html")
    path = tmp_path / name
    download.value.save_as(path)
    offline = browser.new_page()
    offline.errors = []
    offline.on("pageerror", lambda error: offline.errors.append(str(error)))
    offline.goto(path.as_uri())
    offline.locator("#vis svg rect").first.wait_for(state="attached", timeout=DRAWN_MS)
    assert offline.locator("#vis svg").count() > 0 and offline.errors == []
    assert offline.locator("img").count() == 0
    offline.close()


def test_a_charts_png_download_is_named_for_the_chart_and_the_input(fill_mask_tab):
    tab = open_tab(fill_mask_tab.page, "Fill-mask")
    tab.get_by_role("tab", name="Attention").click()
    chart = tab.locator(".js-plotly-plot", has_text="Attention entropy per head")
    chart.scroll_into_view_if_needed()
    chart.hover()
    with tab.page.expect_download(timeout=DRAWN_MS) as download:
        chart.locator("button.modebar-btn[data-title='Download plot as a PNG']").click()
    assert download.value.suggested_filename == "preln-mini_entropy_the-img-src-x-onerror-alert-1-script-sat.png"


def test_the_model_view_image_downloads_named_for_the_chart_and_the_input(fill_mask_tab):
    tab = open_tab(fill_mask_tab.page, "Fill-mask")
    tab.get_by_role("tab", name="Attention").click()
    image = tab.locator(".block", has_text="Model view: click a head").last
    image.scroll_into_view_if_needed()
    image.hover()
    with tab.page.expect_download(timeout=DRAWN_MS) as download:
        image.get_by_role("button", name="Download").click()
    name = download.value.suggested_filename
    assert name.startswith("preln-mini_model-view_the-img-src-x-onerror-alert-1-script") and name.endswith(".png")


def test_the_export_tab_writes_the_runs_downloads_when_opened(fill_mask_tab):
    tab = open_tab(fill_mask_tab.page, "Fill-mask")
    tab.get_by_role("tab", name="Export").click()
    trace_json = tab.locator("td.filename[aria-label$='-trace.json']").first
    expect(trace_json).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    assert trace_json.get_attribute("aria-label").startswith("preln-mini_the-img-src-x-onerror-alert-1-script-sat")
    assert tab.locator("td.filename").count() == 6  # the JSON, and the description, result and 3 tables as CSV


def test_the_other_tabs_draw_their_charts_when_opened_and_after_a_run_while_open(page):
    tab = open_tab(page, "Fill-mask")
    for name, charts in (("Residual stream", 3), ("Logit lens", 1), ("LayerNorm", 3)):
        tab.get_by_role("tab", name=name).click()
        panel = tab.locator(".tabitem:visible").last
        expect(panel.locator(".js-plotly-plot")).to_have_count(charts, timeout=RESULT_TIMEOUT_MS)
    expect(panel.locator("table").first).to_contain_text("blocks.0.ln1", timeout=DRAWN_MS)  # LayerNorm statistics
    tab.get_by_label("Text with one or more <mask>").fill("A cow was on the <mask>.")
    tab.get_by_role("button", name="Predict").click()
    ticks = panel.locator(".js-plotly-plot", has_text="LayerNorm scale").locator(".xtick text")
    expect(ticks.filter(has_text="cow").first).to_be_attached(timeout=RESULT_TIMEOUT_MS)


def test_a_pair_of_texts_gets_the_sentence_filters_in_the_apps_head_view(page):
    tab = run_and_open_bertviz(page, "Classification", {"Text": "A gripping film.",
                                                       "Second text (optional, for pair tasks)": "A dull one."},
                               "Classify")
    expect(tab.get_by_role("button", name="Download this head view")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    frame = tab.locator("iframe[title='bertviz head view']").content_frame
    expect(frame.locator("#vis svg text").filter(has_text="dull").first).to_be_attached(timeout=DRAWN_MS)
    assert "Sentence A -> Sentence B" in frame.locator("#filter").inner_text()


def test_a_new_run_with_the_tab_open_draws_its_view_again(page):
    """Last: it changes the fill-mask tab's text, which the tests above name their downloads after."""
    tab = run_and_open_bertviz(page, "Fill-mask", {}, "Predict")  # opened before this run, and still open
    view_frame(tab, "head view")
    tab.get_by_label("Text with one or more <mask>").fill("A dog was on the <mask>.")
    tab.get_by_role("button", name="Predict").click()
    frame = tab.locator("iframe[title='bertviz head view']").content_frame
    expect(frame.locator("#vis svg text").filter(has_text="dog").first).to_be_attached(timeout=RESULT_TIMEOUT_MS)
    expect(tab.get_by_role("button", name="Download this head view")).to_be_visible(timeout=DRAWN_MS)
