"""bertviz's views drawn in a real browser with the network cut: every request that is not file:, data: or about:
is aborted and recorded, and each test checks that none was tried, no script error happened and no dialog opened.

Drives Debian's Chromium through Playwright. Outside CI the tests skip when no Chromium is installed; in CI (`CI`
set) a missing browser is a failure, as in tests/test_browser.py.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.browser_support import ARTIFACTS, launched_browser

pytest.importorskip("bertviz", reason="bertviz is not installed (pip install bertviz==1.4.1)")

from rpln_core import fill_mask  # noqa: E402
from test_bertviz_views import HOSTILE, hostile_trace, mlm, pair, with_queries_and_keys  # noqa: E402,F401 - fixtures
from viz import bertviz_views as bv  # noqa: E402

LOCAL_SCHEMES = {"file", "data", "about"}
DRAWN_MS = 15_000  # CI's two cores may be busy with the rest of the suite


@pytest.fixture(scope="module")
def browser():
    with launched_browser() as browser:
        yield browser


@pytest.fixture
def offline(browser, tmp_path, request):
    """Return open(page_or_path) -> a Playwright page showing it from a file:// URL, with the network cut.
    Afterwards, checks that the page tried no request, raised no error and opened no dialog."""
    pages = []

    def open_page(page: str | Path, allowed=lambda url: urlsplit(url).scheme in LOCAL_SCHEMES):
        tab = browser.new_page(viewport={"width": 1300, "height": 900})
        tab.left, tab.errors, tab.dialogs = [], [], []
        tab.route("**/*", lambda route: route.continue_() if allowed(route.request.url)
                  else (tab.left.append(route.request.url), route.abort()))
        tab.on("pageerror", lambda error: tab.errors.append(str(error)))
        tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
        if isinstance(page, str) and page.startswith("http"):
            url = page
        else:
            path = page if isinstance(page, Path) else tmp_path / f"view-{len(pages)}.html"
            if not isinstance(page, Path):
                path.write_text(page, encoding="utf-8")
            url = path.as_uri()
        tab.goto(url)
        pages.append(tab)
        return tab

    yield open_page
    ARTIFACTS.mkdir(exist_ok=True)
    for index, tab in enumerate(pages):
        tab.screenshot(path=str(ARTIFACTS / f"bertviz-{request.node.name}-{index}.png"))  # for review of a failure
        assert (tab.left, tab.errors, tab.dialogs) == ([], [], []), "a request left, a script failed or a dialog opened"
        tab.close()


def drawn(tab, selector="#vis svg line"):
    tab.locator(selector).first.wait_for(state="attached", timeout=DRAWN_MS)
    return tab.locator(selector).count()


def texts(tab, selector="#vis svg text"):
    return tab.locator(selector).all_text_contents()


def test_the_head_view_draws_a_line_per_head_query_and_key(offline, mlm):
    tab = offline(bv.head_view_html(mlm, layer=1))
    n = len(mlm.tokens)
    assert drawn(tab) == mlm.num_heads * n * n
    assert tab.locator("#layer").input_value() == "1"
    assert texts(tab)[:n] == mlm.tokens.strings  # the left column, as the trace reads
    opacity = tab.locator("#vis svg line").first.get_attribute("stroke-opacity")
    assert float(opacity) == pytest.approx(float(mlm.attentions[1, 0, 0, 0]) / mlm.num_heads, abs=0.5 / 255)


def test_a_window_of_heads_draws_only_its_lines_and_its_squares_are_those_heads(offline, mlm, monkeypatch):
    n = len(mlm.tokens)
    monkeypatch.setattr(bv, "HEAD_VIEW_MAX_LINES", 2 * n * n)  # a budget of two heads at this length
    tab = offline(bv.head_view_html(mlm, layer=1, heads=[2]))
    assert drawn(tab) == 2 * n * n  # heads 2 and 3 only
    squares = tab.locator("#vis svg > g").last.locator("rect")
    assert squares.count() == 2
    opacity = tab.evaluate("""() => [...document.querySelectorAll('#vis svg g.headAttention')].map(
        g => +g.querySelector('line').getAttribute('stroke-opacity'))""")
    assert opacity == pytest.approx([float(mlm.attentions[1, 2, 0, 0]), 0.0], abs=0.5 / 255)  # head 2 selected
    assert tab.locator("#rpln-bertviz-note").inner_text().startswith("Showing heads 2, 3 of 4 (counted from 0)")


def test_the_head_views_sentence_filter_keeps_the_pairs_cross_attention(offline, pair):
    tab = offline(bv.head_view_html(pair))
    drawn(tab)
    tab.select_option("#filter", label="Sentence A -> Sentence B")
    start, n = bv._sentence_b_start(pair), len(pair.tokens)
    assert tab.locator("#vis svg line").count() == pair.num_heads * start * (n - start)


def test_the_model_view_draws_a_thumbnail_per_layer_and_head_and_opens_one(offline, mlm):
    tab = offline(bv.model_view_html(mlm))
    drawn(tab)
    assert tab.locator(".attn_background").count() == mlm.num_layers * mlm.num_heads
    tab.locator("#attn_background_2_3").click(force=True)  # the thumbnail's click region lies on top of it
    assert "Layer 2, Head 3" in texts(tab, "#vis svg text.detail")


def test_the_neuron_view_draws_its_expanded_form_only_once_a_token_is_expanded(offline, mlm):
    tab = offline(bv.neuron_view_html(mlm, 1, 2))
    n = len(mlm.tokens)
    assert drawn(tab) == n * n and tab.locator("#expanded").count() == 0  # the collapsed lines alone
    tab.locator("#collapsed #leftText g").nth(1).hover()
    tab.locator("#collapsed #leftText g").nth(1).locator("rect").nth(1).click(force=True)  # its ⊕
    assert tab.locator("#expanded").get_attribute("visibility") == "visible"
    assert tab.locator("#vis svg line").count() > 3 * n * n  # the query-key and product lines joined them
    tab.locator("#layer").select_option("0")  # a new layer redraws, still expanded
    assert tab.locator("#expanded").get_attribute("visibility") == "visible"
    assert tab.locator("#queries .vector").count() == n


def test_the_neuron_view_shows_query_key_and_their_product_for_a_clicked_token(offline, mlm):
    layer, head, token = 1, 2, 3
    tab = offline(bv.neuron_view_html(mlm, layer, head))
    drawn(tab)
    tab.locator("#collapsed #leftText g").nth(token).hover()
    tab.locator("#collapsed #leftText g").nth(token).locator("rect").nth(1).click(force=True)  # the ⊕ that expands
    tab.locator("#expanded #leftText g").nth(token).hover()
    assert tab.locator("#expanded").get_attribute("visibility") == "visible"
    n = len(mlm.tokens)
    assert tab.locator("#queries .vector").count() == n and tab.locator("#keys .vector").count() == n
    shown = tab.evaluate("""() => ({
        product: [...document.querySelectorAll('#product .vector')].map(v =>
            [...v.querySelectorAll('.element')].map(e => +e.getAttribute('data-value'))),
        dot: [...document.querySelectorAll('#dotproducts .dotproduct')].map(e => +e.getAttribute('data-value')),
        opacity: getComputedStyle(document.querySelector('#product')).opacity})""")
    q = mlm.queries[layer, head, token].float().numpy()  # [head_dim]
    k = mlm.keys[layer, head].float().numpy()  # [tokens, head_dim]
    step = np.abs(q).max() * np.abs(k).max() / bv.QK_LEVELS  # one quantisation step of a product, at most
    assert shown["opacity"] == "1"
    assert np.abs(np.array(shown["product"]) - q * k).max() <= step
    exact = k @ q / np.sqrt(q.size)
    assert np.abs(np.array(shown["dot"]) - exact).max() <= 0.02 * np.abs(exact).max()
    for heading in ("Query q", "Key k", "q × k (elementwise)"):
        assert heading in " ".join(texts(tab, "#heading text"))


def test_the_neuron_view_labels_a_window_of_layers_with_their_own_numbers(offline, mlm):
    tab = offline(bv.neuron_view_html(mlm, 2, 0, include_layers=[1, 2]))
    drawn(tab)
    assert tab.locator("#layer option").all_text_contents() == ["1", "2"]
    assert tab.locator("#layer").input_value() == "1"  # the second included layer: layer 2


@pytest.mark.parametrize("view", ["head", "model", "neuron"])
def test_an_exported_file_opens_offline_and_draws(offline, mlm, tmp_path, view):
    path = bv.export_view(mlm, view, tmp_path)
    tab = offline(path)
    assert drawn(tab) > 0


@pytest.mark.parametrize("view", ["head", "model", "neuron"])
def test_hostile_tokens_show_as_text_and_run_nothing(offline, mlm, view):
    trace = hostile_trace(mlm)
    tab = offline(bv.VIEWS[view](trace))
    drawn(tab)
    if view == "model":  # tokens appear in a thumbnail's detail
        tab.locator("#attn_background_0_0").click(force=True)
    shown = texts(tab)
    for evil in HOSTILE[:2]:
        assert evil in shown
    assert tab.locator("img").count() == 0 and tab.locator("#vis script").count() == 0
    assert tab.title() == f"{view} view · <b>model</b>"


def test_hostile_text_typed_by_a_user_runs_nothing(offline, loaded):
    """Through the tokenizer, which cuts it into pieces (the test above puts it whole in single tokens); the model
    view carries its tokens as the head view does, and would draw 3 × 4 thumbnails of ~60² lines."""
    model = loaded("pre-ln")
    trace = with_queries_and_keys(model, fill_mask(model, f"{HOSTILE[0]} {HOSTILE[1]} <mask>").trace)
    for view in ("head", "neuron"):
        assert drawn(offline(bv.VIEWS[view](trace))) > 0


class Server(SimpleHTTPRequestHandler):
    """ASSET_DIR under /assets/, as the app serves it, and one page at /view.html."""

    page = b""

    def do_GET(self):
        if self.path == "/view.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(self.page)
            return
        self.path = self.path.removeprefix("/assets")
        super().do_GET()

    def log_message(self, *args):
        pass


def test_a_page_can_load_the_libraries_from_the_apps_static_folder(offline, mlm):
    Server.page = bv.model_view_html(mlm, asset_url="/assets").encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Server, directory=str(bv.ASSET_DIR)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_port}"
    try:
        requested = []
        tab = offline(f"{origin}/view.html", allowed=lambda url: requested.append(url) or url.startswith(origin + "/"))
        assert drawn(tab) == mlm.num_layers * mlm.num_heads * len(mlm.tokens) ** 2
        assert sorted(requested[1:]) == sorted(f"{origin}/assets/{lib.path.relative_to(bv.ASSET_DIR).as_posix()}"
                                               for lib in bv.libraries())
    finally:
        server.shutdown()
        server.server_close()
