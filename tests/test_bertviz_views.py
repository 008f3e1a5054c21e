"""bertviz's head, model and neuron views of a trace: standalone pages that load nothing from outside, carry the
trace's numbers to within what the eye can see, keep user text as text, and stay small for large models.

The browser side (drawing, clicking, offline files) is tests/test_bertviz_browser.py."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

bertviz = pytest.importorskip("bertviz", reason="bertviz is not installed (pip install bertviz==1.4.1)")

from rpln_core import CaptureOptions, RplnError, answer, classify, fill_mask  # noqa: E402
from rpln_core.tokens import Tokens  # noqa: E402
from viz import bertviz_views as bv  # noqa: E402
from viz.text import visible_token  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>", "<!--", "]]>", "&amp;", "\u2028"]
VIEWS = ("head", "model", "neuron")


def with_queries_and_keys(loaded, trace):
    """A copy of `trace` with queries and keys read by hooks of our own on the query and key projections, split
    into heads as self-attention does: a path independent of the engine's capture."""
    heads = trace.num_heads
    found = {}
    hooks = [
        module.register_forward_hook(lambda module, args, output, key=(kind, index): found.__setitem__(key, output[0]))
        for index, layer in enumerate(loaded.body.encoder.layer)
        for kind, module in (("q", layer.attention.self.query), ("k", layer.attention.self.key))
    ]
    ids = torch.tensor([trace.tokens.ids])
    try:
        with loaded.lock, torch.no_grad():
            loaded.body(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()
    stacked = {
        kind: torch.stack([found[kind, i].unflatten(-1, (heads, -1)).transpose(0, 1) for i in range(trace.num_layers)])
        for kind in "qk"
    }  # [layers, heads, tokens, head_dim]
    result = copy.copy(trace)
    result.queries, result.keys = stacked["q"], stacked["k"]
    return result


def page_data(page: str) -> dict:
    """The JSON a page carries, as its script reads it."""
    return json.loads(re.search(r'<script type="application/json" id="rpln-bertviz-data">(.*?)</script>', page, re.S)[1])


def unpacked(part: dict) -> np.ndarray:
    """A packed tensor as the page's script unpacks it: [layers, heads, rows, cols] floats."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(part["data"])), np.uint8 if "levels" in part else np.int8)
    values = raw.reshape(part["shape"]).astype(np.float64)
    if "levels" in part:
        return values / part["levels"]
    return values * np.array(part["scales"]).reshape(part["shape"][:2])[..., None, None]


@pytest.fixture(scope="module")
def mlm(loaded):
    model = loaded("pre-ln")
    return with_queries_and_keys(model, fill_mask(model, "The cat sat on the <mask> near the dog.").trace)


@pytest.fixture(scope="module")
def pair(loaded):
    model = loaded("pre-ln", "classification")
    return with_queries_and_keys(model, classify(model, "A good movie.", "I laughed a lot.").trace)


@pytest.fixture(scope="module")
def pages(mlm):
    return {view: bv.VIEWS[view](mlm) for view in VIEWS}


def test_our_queries_and_keys_reproduce_the_captured_attention(mlm):
    """The reference q and k of these tests are right: softmax(q·kᵀ/√d) is the pattern the trace captured."""
    scores = mlm.queries.float() @ mlm.keys.float().transpose(-1, -2) / mlm.queries.shape[-1] ** 0.5
    assert torch.allclose(scores.softmax(-1), mlm.attentions.float(), atol=2e-3)


@pytest.mark.parametrize("view", VIEWS)
def test_a_page_loads_no_script_or_stylesheet_from_outside(pages, view):
    page = pages[view]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?([^\"' >]+)", page, re.I)
    assert sources == []  # inlined: no source at all
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    assert policy.startswith("default-src &#x27;none&#x27;; script-src &#x27;sha256-")  # nothing else may load


@pytest.mark.parametrize("view", VIEWS)
def test_a_page_runs_bertvizs_own_view_script(pages, view):
    installed = (Path(bertviz.__file__).parent / f"{view}_view.js").read_text()
    renderer = re.search(r"function (render\w*)\(", installed)[1]  # a function name of bertviz's own drawing code
    assert f"function {renderer}(" in pages[view] and "rplnBertvizView" in pages[view]
    for library in bv.libraries():
        assert library.path.read_text() in pages[view]  # d3, jQuery and require.js inlined whole


def test_the_static_mode_references_the_libraries_under_the_served_prefix(mlm):
    prefix = f"/gradio_api/file={bv.ASSET_DIR}"
    page = bv.head_view_html(mlm, asset_url=prefix)
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert sources == [f"{prefix}/{lib.path.relative_to(bv.ASSET_DIR).as_posix()}" for lib in bv.libraries()]
    assert all((bv.ASSET_DIR / s.removeprefix(prefix + "/")).is_file() for s in sources)
    assert "script-src &#x27;self&#x27;" in page and len(page) < 200_000  # the libraries are not inlined


@pytest.mark.parametrize("view", VIEWS)
def test_the_page_carries_each_attention_weight_to_within_half_a_255th(pages, mlm, view):
    data = page_data(pages[view])
    attention = unpacked(data["packed"]["attention"])
    expected = mlm.attentions.float().numpy()
    assert attention.shape == expected.shape  # a small model: every layer and head
    assert np.abs(attention - expected).max() <= 0.5 / 255 + 1e-6


def test_the_neuron_view_carries_queries_and_keys_to_within_half_a_step_of_each_heads_range(pages, mlm):
    packed = page_data(pages["neuron"])["packed"]
    for name, reference in (("queries", mlm.queries), ("keys", mlm.keys)):
        values, expected = unpacked(packed[name]), reference.float().numpy()
        step = np.abs(expected).max(axis=(2, 3), keepdims=True) / bv.QK_LEVELS
        assert np.all(np.abs(values - expected) <= step / 2 + 1e-6)
    # what the view draws from them, q·k/√d for each query and key, stays close to the model's own scores
    q, k = unpacked(packed["queries"]), unpacked(packed["keys"])
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    exact = (mlm.queries.float() @ mlm.keys.float().transpose(-1, -2)).numpy() / np.sqrt(q.shape[-1])
    assert np.abs(scores - exact).max() <= 0.02 * np.abs(exact).max()


def test_attention_kept_in_8_bits_reaches_the_page_as_it_was_kept(loaded):
    trace = fill_mask(loaded("pre-ln"), "The cat sat on the <mask>.", options=CaptureOptions(attention_budget_bytes=1)).trace
    assert trace.attentions.dtype == torch.float8_e5m2
    attention = unpacked(page_data(bv.model_view_html(trace))["packed"]["attention"])
    assert np.abs(attention - trace.attentions.float().numpy()).max() <= 0.5 / 255 + 1e-6


def test_the_tokens_are_the_traces_as_a_reader_sees_them(pages, mlm):
    params = page_data(pages["head"])["params"]
    assert params["attention"][0]["left_text"] == mlm.tokens.strings == params["attention"][0]["right_text"]


def test_a_sentence_pair_gets_bertvizs_four_filters_cut_where_the_second_text_starts(pair):
    segments = pair.tokens.segments
    start = bv._sentence_b_start(pair)
    # RoBERTa's `</s></s>` between the texts: the first closes sentence A, the second opens sentence B
    assert segments[start - 1] is None and segments[start] is None and segments[start + 1] == 1
    n = len(segments)
    expected = {"All": ((0, n), (0, n)), "Sentence A -> Sentence A": ((0, start), (0, start)),
                "Sentence B -> Sentence B": ((start, n), (start, n)), "Sentence A -> Sentence B": ((0, start), (start, n)),
                "Sentence B -> Sentence A": ((start, n), (0, start))}
    for view in ("head", "model"):
        data = page_data(bv.VIEWS[view](pair))
        names = [v["name"] for v in data["params"]["attention"]]
        cuts = {name: (tuple(f["rows"]), tuple(f["cols"])) for name, f in zip(names, data["filters"])}
        assert cuts == expected
        for v, (rows, cols) in zip(data["params"]["attention"], expected.values()):
            assert v["left_text"] == pair.tokens.strings[slice(*rows)] and v["right_text"] == pair.tokens.strings[slice(*cols)]
    neuron = page_data(bv.neuron_view_html(pair))
    assert set(neuron["filters"]) == {"all", "aa", "ab", "ba", "bb"}
    assert neuron["filters"]["ab"] == {"rows": [0, start], "cols": [start, n]}
    assert '<select id="filter">' in bv.neuron_view_html(pair)


def test_a_question_and_its_context_are_the_two_sentences(loaded):
    trace = answer(loaded("pre-ln", "qa"), "Who wrote it?", "Anna wrote the letter in Paris.").trace
    segments, start = trace.tokens.segments, bv._sentence_b_start(trace)
    assert set(segments[:start]) == {None, 0} and set(segments[start:]) == {None, 1}
    assert segments[start] is None and segments[start + 1] == 1  # B opens with the second </s>, as bertviz cuts it


def test_one_text_gets_no_filter_menu(pages):
    assert all('id="filter"' not in pages[view] for view in VIEWS)


class Elements(HTMLParser):
    """The start tags of a document, in order."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def hostile_trace(trace):
    """`trace` whose first tokens read as markup, script and JSON breakers."""
    strings = list(trace.tokens.strings)
    strings[1 : 1 + len(HOSTILE)] = HOSTILE
    return replace(trace, tokens=replace(trace.tokens, strings=strings), model_name="<b>model</b>")


@pytest.mark.parametrize("view", VIEWS)
def test_hostile_tokens_stay_text_in_every_view(mlm, view):
    trace = hostile_trace(mlm)
    page = bv.VIEWS[view](trace)
    elements = Elements()
    elements.feed(page)  # tokenised as a browser does: a script's text ends only at `</script`
    assert elements.tags.count("script") == len(bv.libraries()) + 4  # define, data, bertviz's view, unpacking
    assert not {"img", "b", "iframe"} & set(elements.tags)
    data = page_data(page)
    tokens = data["params"]["attention"][0 if view != "neuron" else "all"]["left_text"]
    assert tokens == [visible_token(s) for s in trace.tokens.strings]  # and read back exactly
    assert "&lt;b&gt;model&lt;/b&gt;" in page  # the title


def test_the_export_is_named_for_model_view_and_input(mlm, tmp_path):
    name = bv.export_filename(mlm, "head")
    assert name == "pre-ln-mlm0_head-view_the-cat-sat-on-the-near-the-dog.html"  # the words, not the subwords
    evil = replace(hostile_trace(mlm), model_name="..\\../etc/<x> passwd")
    assert re.fullmatch(r"x-passwd_model-view_img-src-x-onerror-alert-1-script[a-z0-9-]*\.html", bv.export_filename(evil, "model"))
    path = bv.export_view(mlm, "model", tmp_path)
    assert path.parent == tmp_path and path.name == bv.export_filename(mlm, "model")
    assert '<script src="' not in path.read_text()  # libraries inlined even if asset_url was asked
    assert '<script src="' not in bv.export_view(mlm, "neuron", tmp_path, asset_url="/x").read_text()


def test_the_neuron_view_asks_for_queries_and_keys_when_the_trace_has_none(loaded):
    trace = fill_mask(loaded("pre-ln"), "The cat sat on the <mask>.").trace
    trace = copy.copy(trace)
    trace.queries = trace.keys = None
    with pytest.raises(RplnError, match="queries_and_keys=True"):
        bv.neuron_view_html(trace)


def test_layers_and_heads_outside_the_model_are_refused(mlm):
    with pytest.raises(ValueError, match="Layer 3 does not exist"):
        bv.head_view_html(mlm, include_layers=[0, 3])
    with pytest.raises(ValueError, match="not among the included layers"):
        bv.head_view_html(mlm, layer=2, include_layers=[0, 1])
    with pytest.raises(ValueError, match="Head 9 does not exist"):
        bv.model_view_html(mlm, include_heads=[9])
    with pytest.raises(ValueError, match="Head 4 does not exist"):
        bv.neuron_view_html(mlm, 0, 4)


def test_chosen_layers_and_heads_are_what_the_page_carries_and_says(mlm):
    page = bv.model_view_html(mlm, [2, 0], include_heads=[3, 1])
    data = page_data(page)
    assert data["params"]["include_layers"] == [0, 2] and data["params"]["include_heads"] == [1, 3]
    expected = mlm.attentions.float()[[0, 2]][:, [1, 3]].numpy()
    assert np.abs(unpacked(data["packed"]["attention"]) - expected).max() <= 0.5 / 255 + 1e-6
    assert "Showing layers 0, 2 of 3 and heads 1, 3 of 4" in page


def large_trace(trace, layers=24, heads=16, tokens=128, head_dim=64, seed=0):
    """`trace` reshaped to efficient_mlm_m0.40's attention (24 layers × 16 heads) at `tokens` tokens: random
    softmax patterns and Gaussian q/k, enough to size the pages without running a 355M-parameter model."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(layers, heads, tokens, tokens, generator=generator) * 3
    strings = [f"tok{i}" for i in range(tokens)]
    return replace(
        trace,
        attentions=logits.softmax(-1).half(),
        tokens=Tokens(ids=list(range(tokens)), strings=strings, offsets=[(0, 0)] * tokens,
                      special=[False] * tokens, segments=[0] * tokens),
        queries=torch.randn(layers, heads, tokens, head_dim, generator=generator).half() * 2,
        keys=torch.randn(layers, heads, tokens, head_dim, generator=generator).half() * 2,
    )


@pytest.mark.parametrize("view", VIEWS)
def test_at_24_layers_16_heads_and_128_tokens_each_page_is_under_5_mb(mlm, view):
    page = bv.VIEWS[view](large_trace(mlm))
    assert len(page.encode()) <= 5 * 2**20


def test_a_long_input_keeps_the_model_view_to_what_draws_quickly(mlm):
    data = page_data(bv.model_view_html(large_trace(mlm)))
    layers, heads = data["params"]["include_layers"], data["params"]["include_heads"]
    assert len(layers) * len(heads) * 128**2 <= bv.MODEL_VIEW_MAX_LINES
    short = page_data(bv.model_view_html(large_trace(mlm, tokens=16)))["params"]
    assert short["include_heads"] == list(range(16))  # whole layers, spread from the first to the last
    assert short["include_layers"][0] == 0 and short["include_layers"][-1] == 23 and len(short["include_layers"]) > 2


def test_a_long_input_keeps_the_head_view_to_the_heads_around_the_selected_one(mlm):
    trace = large_trace(mlm)
    page = bv.head_view_html(trace, layer=5, heads=[9])
    data = page_data(page)
    heads = data["params"]["include_heads"]
    assert 9 in heads and heads == list(range(heads[0], heads[-1] + 1)) and 1 <= len(heads) < 16
    assert len(heads) * 128**2 <= bv.HEAD_VIEW_MAX_LINES  # the lines head_view.js draws for one layer
    assert data["params"]["heads"] == [heads.index(9)]  # bertviz selects by position among the page's heads
    expected = trace.attentions.float()[:, heads].numpy()
    assert np.abs(unpacked(data["packed"]["attention"]) - expected).max() <= 0.5 / 255 + 1e-6
    assert f"Showing heads {heads[0]}–{heads[-1]} of 16 (counted from 0)" in page
    assert "the coloured squares are these heads, left to right; the Head picker (include_heads)" in page
    first = page_data(bv.head_view_html(trace))["params"]  # nothing selected: as many heads from head 0, all selected
    assert first["include_heads"] == list(range(len(heads))) and first["heads"] is None


def test_a_short_input_gets_every_head_in_the_head_view_and_no_note(mlm):
    page = bv.head_view_html(mlm, heads=[2])
    assert page_data(page)["params"]["include_heads"] == list(range(mlm.num_heads))
    assert page_data(page)["params"]["heads"] == [2]
    assert '<p id="rpln-bertviz-note" hidden></p>' in page


def test_the_head_view_carries_the_chosen_heads_and_names_its_squares(mlm):
    page = bv.head_view_html(mlm, heads=[3], include_heads=[3, 1])
    params = page_data(page)["params"]
    assert params["include_heads"] == [1, 3] and params["heads"] == [1]
    expected = mlm.attentions.float()[:, [1, 3]].numpy()
    assert np.abs(unpacked(page_data(page)["packed"]["attention"]) - expected).max() <= 0.5 / 255 + 1e-6
    assert "Showing heads 1, 3 of 4 (counted from 0), to keep the page quick: the coloured squares are these heads, " \
           "left to right" in page


def test_heads_selected_outside_the_included_heads_are_refused(mlm):
    with pytest.raises(ValueError, match=r"Head 2 is not among the included heads \[0, 1\]"):
        bv.head_view_html(mlm, heads=[2], include_heads=[0, 1])
    with pytest.raises(ValueError, match="Head 15 is not among the included heads"):
        bv.head_view_html(large_trace(mlm), heads=[0, 15])  # the default window is around the first, head 0
    with pytest.raises(ValueError, match="Head 4 does not exist"):
        bv.head_view_html(mlm, include_heads=[4])


def test_a_long_input_keeps_the_neuron_view_to_the_layers_around_the_chosen_one(mlm):
    page = bv.neuron_view_html(large_trace(mlm), layer=20)
    data = page_data(page)
    layers = data["layer_labels"]
    assert 20 in layers and layers == list(range(layers[0], layers[-1] + 1)) and len(layers) < 24
    assert data["params"]["layer"] == layers.index(20)
    assert f"Showing layers {layers[0]}–{layers[-1]} of 24" in page


def test_the_iframe_holds_the_page_escaped_and_sandboxed(pages):
    frame = bv.iframe_html(pages["head"], title='head "view"')
    assert frame.startswith('<iframe sandbox="allow-scripts" title="head &quot;view&quot;" srcdoc="&lt;!DOCTYPE html&gt;')
    assert "<script" not in frame and re.search(r"height: \d+px", frame)


def test_the_vendored_libraries_match_their_pins_and_readme():
    manifest = json.loads((bv.ASSET_DIR / "manifest.json").read_text())
    readme = (bv.ASSET_DIR / "README.md").read_text()
    for library in manifest["libraries"]:
        assert f"{library['name']}" in readme and library["version"] in readme
        assert any(Path(f["to"]).name.startswith("LICENSE") for f in library["files"])  # each with its licence
        for file in library["files"]:
            assert hashlib.sha256((bv.ASSET_DIR / file["to"]).read_bytes()).hexdigest() == file["sha256"]
            assert file["sha256"] in readme
    check = subprocess.run([sys.executable, "scripts/fetch_view_assets.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_changed_neuron_view_script_is_an_error_not_a_silent_full_draw():
    script = bv._view_script("neuron_view.js")
    assert "config.drawExpanded();" in script and script.count("renderVisExpanded(svg,") == 2  # defined, deferred
    with pytest.raises(RplnError, match="neuron_view.js has changed"):
        bv._deferring_expansion(script.replace("function showExpanded() {", "function showExpanded () {"))
