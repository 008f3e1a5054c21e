"""bertviz's head, model and neuron views of a trace, as standalone HTML documents that work offline.

A thin wrapper: bertviz's own Python (`head_view`, `model_view` with html_action="return") composes the head and
model views, bertviz's own JavaScript (head_view.js, model_view.js, neuron_view.js, read from the installed
package) draws all three. What changes is how a page gets its libraries and its numbers:
- d3, jQuery and require.js come from viz/assets (inlined, or from a URL the app serves), never from a CDN, and a
  Content-Security-Policy lets the page load nothing else: no request leaves it;
- the numbers travel packed (attention as 1/255 steps, queries and keys as 8-bit integers per head, deflated),
  and are unpacked in the page into exactly the arrays bertviz's JavaScript reads. bertviz writes every value as
  a full-precision float, twice (its params land in a code comment too): 276 MB for 24 layers × 16 heads × 128 tokens;
- token strings reach the page as JSON with `<`, `>` and `&` escaped, so user text stays text.

bertviz's Python is given the tokens and a stand-in of the attention's shape whose values are position codes
(i · tokens + j): the filters it generates (All, Sentence A -> Sentence B, …) then say which slice of the trace each
shows. The neuron view's Python only runs bertviz's forked models, so its page is composed here from the same data.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib
import json
import re
import uuid
import zlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from rpln_core.capture import Trace
from rpln_core.errors import RplnError

from .export import model_slug, slug, trace_words
from .layout import check_index
from .text import visible_token

View = Literal["head", "model", "neuron"]
ASSET_DIR = Path(__file__).resolve().parent / "assets"
# Attention is drawn as stroke opacity, which the screen shows in 8 bits: 1/255 steps are all the eye can see.
ATTENTION_LEVELS = 255
# Queries and keys: 8-bit integers scaled to each head's largest |value| (0.4% of it), finer than the
# tanh(|v|/4) opacity bertviz colours them with, and close enough that q·k/√d matches the drawn pattern.
QK_LEVELS = 127
# bertviz's JavaScript draws one SVG line per (head, query, key), 15-20 µs each in headless Chromium on two cores:
# 65,536 lines draw in about 1.3 s. The model view draws every included head at once, so by default it includes as
# many heads as fit this many lines.
MODEL_VIEW_MAX_LINES = 65_536
# The head view draws every included head of the shown layer, selected or not (its squares only fade the lines), and
# again on each change of layer: by default it includes the heads around the selected one that fit this many lines.
# Its lines are long and draw slower than the model view's: at 128 tokens on the two cores, 3 heads drew in 0.9 s
# (quiet) to 1.5 s (load 4-5), 4 heads in 1.1 s to 2.1 s (bench_bertviz under load: 1.85-1.95 s), 6 heads in 1.6 s
# to 2.7 s; each change of layer redraws them (4 heads: 0.6-1 s). 3 heads stay under 2 s on a busy machine. 55 tokens
# or fewer: all 16 heads.
HEAD_VIEW_MAX_LINES = 49_152
# The neuron view carries queries and keys too (2 · head_dim values per token and head, which deflate poorly): by
# default it includes the layers around the chosen one that fit this many values, under 3 MB of HTML.
NEURON_VIEW_MAX_VALUES = 3_500_000
# zlib level 3 packed a 24-layer head view's 6.3 MB of weights (all 16 heads at 128 tokens) in 0.14 s, 16% larger
# than level 6 in a quarter of its time.
DEFLATE_LEVEL = 3
_MARKER = "PYTHON_PARAMS"  # what bertviz replaces with its params JSON in head_view.js and model_view.js


@dataclass(frozen=True)
class _Library:
    name: str
    version: str
    path: Path  # the minified script under ASSET_DIR


@cache
def libraries() -> tuple[_Library, ...]:
    """The vendored libraries in the order a page loads them (d3 and jQuery before require.js: see _DEFINE)."""
    manifest = json.loads((ASSET_DIR / "manifest.json").read_text())
    found = {lib["name"]: _Library(lib["name"], lib["version"], ASSET_DIR / lib["script"]) for lib in manifest["libraries"]}
    return tuple(found[name] for name in ("d3", "jquery", "requirejs"))


@cache
def _library_source(path: Path) -> str:
    if not path.is_file():
        raise RplnError(f"{path} is missing: run `python scripts/fetch_view_assets.py` to fetch the view libraries.")
    return path.read_text(encoding="utf-8")


def _bertviz(name: str):
    """bertviz's function `name`. Imported here, so that a missing bertviz, or IPython which it imports, is a
    message saying how to install it."""
    try:
        return getattr(importlib.import_module("bertviz"), name)
    except ModuleNotFoundError as error:
        raise RplnError(f"{error.name} is not installed, and bertviz's views need it: pip install -r requirements.txt") from error


@cache
def _bertviz_js(name: str) -> str:
    """One of bertviz's view scripts, exactly as installed (the file its own Python reads)."""
    _bertviz("head_view")
    return resources.files("bertviz").joinpath(name).read_text(encoding="utf-8")


# ---------------------------------------------------------------- public API


def head_view_html(trace: Trace, *, asset_url: str | None = None, **options) -> str:
    """bertviz's head view of `trace` (see head_view_page for the options) as a page. `asset_url`: None inlines the
    libraries (for a download or an iframe's srcdoc), else the URL prefix under which the app serves `ASSET_DIR`
    (e.g. "/gradio_api/file=/abs/viz/assets")."""
    return head_view_page(trace, **options).html(asset_url)


def model_view_html(trace: Trace, include_layers: Sequence[int] | None = None, *, asset_url: str | None = None,
                    **options) -> str:
    """bertviz's model view of `trace` (see model_view_page for the options) as a page; `asset_url` as above."""
    return model_view_page(trace, include_layers, **options).html(asset_url)


def neuron_view_html(trace: Trace, layer: int = 0, head: int = 0, *, asset_url: str | None = None, **options) -> str:
    """bertviz's neuron view of `trace` (see neuron_view_page for the options) as a page; `asset_url` as above."""
    return neuron_view_page(trace, layer, head, **options).html(asset_url)


def head_view_page(
    trace: Trace,
    *,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    include_layers: Sequence[int] | None = None,
    include_heads: Sequence[int] | None = None,
) -> ViewPage:
    """bertviz's head view of `trace`: the included heads of one layer as lines from each token to those it attends to.

    `layer`: the layer shown first; `heads`: the heads selected first (default all included); `include_layers`: the
    layers the layer menu offers (default all); `include_heads`: the heads the page carries, one coloured square each
    (default all if they draw quickly, else the heads around the first of `heads` that fit HEAD_VIEW_MAX_LINES; a
    line above the view says which)."""
    layers = _layers(trace, include_layers)
    if layer is not None and layer not in layers:
        raise ValueError(f"Layer {layer} is not among the included layers {layers}.")
    for head in heads or ():
        check_index(head, trace.num_heads, "Head")
    if include_heads is None:
        include_heads = head_view_heads(trace, heads[0] if heads else 0)
    included = _heads(trace, include_heads)
    for head in heads or ():
        if head not in included:
            raise ValueError(f"Head {head} is not among the included heads {included}: include it with include_heads.")
    tokens = _token_strings(trace)
    result = _bertviz("head_view")(
        _stand_in(trace, layers), tokens, sentence_b_start=_sentence_b_start(trace), prettify_tokens=False,
        layer=layer, heads=[included.index(h) for h in heads] if heads else None,  # bertviz counts the page's heads
        include_layers=layers, html_action="return",
    )
    vis_html, params = _split(result.data, _bertviz_js("head_view.js"))
    filters = _filters_from_stand_in(params["attention"], len(tokens))
    packed = _pack_views(trace, layers, included, queries_and_keys=False)
    params["include_heads"] = included  # read by no bertviz script: it says which heads the squares are
    data = {"params": params, "filters": filters, "packed": packed}
    height = round(len(tokens) * 22.5) + 30 + 50  # bertviz's rows of 22.5 px below a 30 px band, and the menus
    note = _subset_note(trace, layers, included, squares=True)
    return ViewPage.of(trace, "head view", vis_html, data, "head_view.js", note, height)


def head_view_heads(trace: Trace, around: int = 0) -> list[int]:
    """The heads the head view includes by default: all, if their lines fit HEAD_VIEW_MAX_LINES, else the window
    of heads around `around` that does (at least that one)."""
    check_index(around, trace.num_heads, "Head")
    return _window(trace.num_heads, around, max(1, HEAD_VIEW_MAX_LINES // len(trace.tokens) ** 2))


def model_view_page(
    trace: Trace,
    include_layers: Sequence[int] | None = None,
    *,
    include_heads: Sequence[int] | None = None,
    display_mode: Literal["light", "dark"] = "light",
) -> ViewPage:
    """bertviz's model view of `trace`: a thumbnail of every included head of every included layer; click one for
    its detail. By default as many as draw quickly (MODEL_VIEW_MAX_LINES): all of a short input's, and for a long
    one whole layers spread over depth, or only some heads of layer 0; a line above the view says which."""
    layers, heads = _model_view_subset(trace, include_layers, include_heads)
    tokens = _token_strings(trace)
    # The stand-in has one head (its values only locate the filters), so bertviz's head lists are set here.
    result = _bertviz("model_view")(
        _stand_in(trace, layers), tokens, sentence_b_start=_sentence_b_start(trace), prettify_tokens=False,
        display_mode=display_mode, include_layers=layers, html_action="return",
    )
    vis_html, params = _split(result.data, _bertviz_js("model_view.js"))
    params.update(include_heads=heads, total_heads=len(heads))
    filters = _filters_from_stand_in(params["attention"], len(tokens))
    packed = _pack_views(trace, layers, heads, queries_and_keys=False)
    data = {"params": params, "filters": filters, "packed": packed}
    thumbnail = len(tokens) * 7 * 12 / len(heads) + 10  # model_view.js's thumbnail height and detail panel height
    height = round(max(len(layers) * thumbnail + 38, len(tokens) * 18 + 70)) + 40
    note = _subset_note(trace, layers, heads)
    return ViewPage.of(trace, "model view", vis_html, data, "model_view.js", note, height)


def neuron_view_page(
    trace: Trace,
    layer: int = 0,
    head: int = 0,
    *,
    include_layers: Sequence[int] | None = None,
    display_mode: Literal["light", "dark"] = "light",
) -> ViewPage:
    """bertviz's neuron view of `trace`: for a clicked token, its query, each key, their elementwise product, q·k/√d
    and the softmax. Needs the trace's queries and keys (CaptureOptions(queries_and_keys=True)). By default it
    includes the layers around `layer` that keep the page under 3 MB (NEURON_VIEW_MAX_VALUES), and says so."""
    queries, keys = getattr(trace, "queries", None), getattr(trace, "keys", None)
    if queries is None or keys is None:
        raise RplnError(
            "The neuron view needs the queries and keys of the pass: run the task with "
            "options=CaptureOptions(queries_and_keys=True)."
        )
    check_index(layer, trace.num_layers, "Layer")
    check_index(head, trace.num_heads, "Head")
    if include_layers is None:
        tokens, head_dim = len(trace.tokens), queries.shape[-1]
        per_layer = trace.num_heads * tokens * (tokens + 2 * head_dim)
        include_layers = _window(trace.num_layers, layer, max(1, NEURON_VIEW_MAX_VALUES // per_layer))
    layers = _layers(trace, include_layers)
    if layer not in layers:
        raise ValueError(f"Layer {layer} is not among the included layers {layers}.")
    tokens = _token_strings(trace)
    root = f"bertviz-{uuid.uuid4().hex}"
    filters = _neuron_filters(trace, tokens)
    params = {
        "attention": {name: {"attn": None, "left_text": tokens[r0:r1], "right_text": tokens[c0:c1]}
                      for name, ((r0, r1), (c0, c1)) in filters.items()},
        "default_filter": "all",
        "root_div_id": root,
        "bidirectional": True,  # an encoder: every token attends both ways
        "display_mode": display_mode,
        "layer": layers.index(layer),  # bertviz indexes the included layers; the menu is relabelled (_BOOT)
        "head": head,
    }
    packed = _pack_views(trace, layers, list(range(trace.num_heads)), queries_and_keys=True)
    data = {
        "params": params,
        "filters": {name: {"rows": list(rows), "cols": list(cols)} for name, (rows, cols) in filters.items()},
        "packed": packed,
        "layer_labels": layers,
    }
    height = len(tokens) * 26 + 100 + 50  # neuron_view.js's rows of 26 px and 100 px of headings, and the menus
    note = _subset_note(trace, layers)
    skeleton = _neuron_skeleton(root, len(filters) > 1)
    return ViewPage.of(trace, "neuron view", skeleton, data, "neuron_view.js", note, height)


VIEWS = {"head": head_view_html, "model": model_view_html, "neuron": neuron_view_html}
PAGES = {"head": head_view_page, "model": model_view_page, "neuron": neuron_view_page}


def export_filename(trace: Trace, view: View) -> str:
    """The download's name: model, view and the start of the input, e.g. `preln-mini_head-view_the-cat-sat.html`."""
    return f"{model_slug(trace.model_name)}_{view}-view_{slug(trace_words(trace), 40)}.html"


def export_view(trace: Trace, view: View, directory: str | Path, *, name: str | None = None, **options) -> Path:
    """Write `view` of `trace` as a standalone file (libraries inlined) into `directory` as `name` (default
    export_filename); return its path."""
    if view not in VIEWS:
        raise ValueError(f"Unknown view {view!r}: choose one of {', '.join(VIEWS)}.")
    options.pop("asset_url", None)  # a download must draw on its own
    return PAGES[view](trace, **options).write(Path(directory) / (name or export_filename(trace, view)))


def static_paths() -> list[Path]:
    """What the app must serve for `asset_url` pages: the one folder of vendored libraries."""
    return [ASSET_DIR]


# ---------------------------------------------------------------- what bertviz is given, and what it returns


def _token_strings(trace: Trace) -> list[str]:
    return [visible_token(s) for s in trace.tokens.strings]


def _layers(trace: Trace, include_layers: Sequence[int] | None) -> list[int]:
    layers = sorted(set(include_layers)) if include_layers is not None else list(range(trace.num_layers))
    if not layers:
        raise ValueError("include_layers is empty: choose at least one layer.")
    for layer in layers:
        check_index(layer, trace.num_layers, "Layer")
    return layers


def _model_view_subset(
    trace: Trace, include_layers: Sequence[int] | None, include_heads: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    """The layers and heads the model view includes: those asked for, else as many thumbnails as draw quickly
    (MODEL_VIEW_MAX_LINES): whole layers spread over depth, or the first heads of layer 0 if one layer is too many."""
    thumbnails = max(1, MODEL_VIEW_MAX_LINES // len(trace.tokens) ** 2)
    if include_heads is None:
        fits = include_layers is not None or thumbnails >= trace.num_heads
        include_heads = range(trace.num_heads if fits else thumbnails)
    heads = _heads(trace, include_heads)
    if include_layers is None:
        include_layers = _spread(trace.num_layers, max(1, thumbnails // len(heads)))
    return _layers(trace, include_layers), heads


def _heads(trace: Trace, include_heads: Sequence[int]) -> list[int]:
    heads = sorted(set(include_heads))
    if not heads:
        raise ValueError("include_heads is empty: choose at least one head.")
    for head in heads:
        check_index(head, trace.num_heads, "Head")
    return heads


def _spread(count: int, most: int) -> list[int]:
    """At most `most` of range(count), evenly spread and always with the first and the last."""
    if most >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(1, most - 1)) for i in range(most)})


def _window(count: int, centre: int, most: int) -> list[int]:
    """At most `most` consecutive indices of range(count) around `centre`."""
    start = min(max(0, centre - (most - 1) // 2), max(0, count - most))
    return list(range(start, min(count, start + most)))


def _sentence_b_start(trace: Trace) -> int | None:
    """Where the second segment starts, as bertviz cuts a pair: the special tokens between the segments are shared,
    the first half going with sentence A (RoBERTa's `</s></s>`: one each; BERT's `[SEP]`: to A). None: one segment."""
    segments = trace.tokens.segments
    if 1 not in segments or 0 not in segments:
        return None
    first_b = segments.index(1)
    last_a = max(i for i, segment in enumerate(segments[:first_b]) if segment == 0)
    between = first_b - last_a - 1
    return last_a + 1 + (between + 1) // 2


def _stand_in(trace: Trace, layers: list[int]) -> tuple[torch.Tensor, ...]:
    """bertviz's input format (one [1, heads, tokens, tokens] tensor per layer) with one head whose values are
    position codes i · tokens + j: cheap to serialise, and each filter bertviz cuts says which slice it took."""
    n = len(trace.tokens)
    codes = torch.arange(n * n, dtype=torch.int32).reshape(1, 1, n, n)
    return tuple(codes for _ in range(max(layers) + 1))


def _split(page: str, template: str) -> tuple[str, dict]:
    """bertviz's returned HTML cut into its markup and its params. It is a CDN <script> for require.js, the markup,
    then `template` with every PYTHON_PARAMS replaced by the params JSON (twice: once in a comment)."""
    script_start = page.rindex('<script type="text/javascript">')
    vis_html = re.sub(r"<script\b[^>]*\bsrc=[^>]*>\s*</script>", "", page[:script_start])
    script = page[script_start:].split(">", 1)[1].rsplit("</script>", 1)[0].strip("\n")
    markers = template.count(_MARKER)
    json_length = (len(script) - len(template)) // markers + len(_MARKER)
    start = template.index(_MARKER)
    params_json = script[start : start + json_length]
    if template.replace(_MARKER, params_json) != script or "<script" in vis_html:
        raise RplnError("bertviz's page is not laid out as expected: is bertviz 1.4.1 installed?")
    return vis_html, json.loads(params_json)


def _filters_from_stand_in(attention: list[dict], n: int) -> list[dict]:
    """For each of bertviz's filters, the rows (queries) and columns (keys) of the full pattern it shows."""
    filters = []
    for view in attention:
        rows = view["attn"][0][0]  # layer 0, the stand-in's one head: [rows][cols] of position codes
        r0, c0 = divmod(rows[0][0], n)
        filters.append({"rows": [r0, r0 + len(rows)], "cols": [c0, c0 + len(rows[0])]})
        view["attn"] = None  # filled in the page from the packed weights
    return filters


def _neuron_filters(trace: Trace, tokens: list[str]) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """The neuron view's filters as bertviz names them: "all", and for two segments "aa", "ab", "ba", "bb"."""
    n, b = len(tokens), _sentence_b_start(trace)
    filters = {"all": ((0, n), (0, n))}
    if b is not None:
        a_part, b_part = (0, b), (b, n)
        filters.update(aa=(a_part, a_part), ab=(a_part, b_part), ba=(b_part, a_part), bb=(b_part, b_part))
    return filters


def _neuron_skeleton(root: str, pairs: bool) -> str:
    """The markup neuron_view.js draws into: layer and head menus, the pair filter, and #vis."""
    menu = (
        '<span class="dropdown-label">Attention: </span><select id="filter">'
        '<option value="all">All</option><option value="aa">Sentence A -&gt; Sentence A</option>'
        '<option value="ab">Sentence A -&gt; Sentence B</option><option value="ba">Sentence B -&gt; Sentence A</option>'
        '<option value="bb">Sentence B -&gt; Sentence B</option></select>'
    ) if pairs else ""
    return (
        f'<div id="{root}" style="padding:8px;font-family:\'Helvetica Neue\', Helvetica, Arial, sans-serif;">'
        '<span style="user-select:none"><span class="dropdown-label">Layer: </span><select id="layer"></select> '
        '<span class="dropdown-label">Head: </span><select id="att_head"></select> '
        f"{menu}</span><div id=\"vis\"></div></div>"
    )


# ---------------------------------------------------------------- packing the numbers


def _deflate_b64(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), DEFLATE_LEVEL)).decode("ascii")


def _pack_views(trace: Trace, layers: list[int], heads: list[int], *, queries_and_keys: bool) -> dict:
    """The included layers' and heads' attention (and queries and keys), quantised and deflated, base64."""
    attention = trace.attentions[layers][:, heads].float()  # [layers, heads, tokens, tokens]
    packed = {
        "attention": {
            "shape": list(attention.shape),
            "levels": ATTENTION_LEVELS,
            "data": _deflate_b64((attention.clamp(0, 1) * ATTENTION_LEVELS).round().to(torch.uint8).numpy()),
        }
    }
    if queries_and_keys:
        for name, tensor in (("queries", trace.queries), ("keys", trace.keys)):
            values = tensor[layers][:, heads].float()  # [layers, heads, tokens, head_dim]
            scales = values.abs().amax(dim=(2, 3)).clamp_min(1e-12) / QK_LEVELS  # [layers, heads]
            codes = (values / scales[..., None, None]).round().clamp(-QK_LEVELS, QK_LEVELS).to(torch.int8)
            packed[name] = {
                "shape": list(values.shape),
                "scales": [float(f"{s:.6g}") for s in scales.flatten().tolist()],
                "data": _deflate_b64(codes.numpy()),
            }
    return packed


def _subset_note(
    trace: Trace, layers: list[int], heads: list[int] | None = None, *, squares: bool = False
) -> str | None:
    """A line above the view saying which layers (and heads) it includes, when not all, and how to choose others.
    `squares`: the head view, whose coloured squares are the included heads in order, whatever their numbers."""
    some_heads = heads is not None and len(heads) < trace.num_heads
    parts = []
    if len(layers) < trace.num_layers:
        parts.append(f"{_numbers('layer', layers)} of {trace.num_layers}")
    if some_heads:
        parts.append(f"{_numbers('head', heads)} of {trace.num_heads}")
    if not parts:
        return None
    showing = f"Showing {' and '.join(parts)} (counted from 0), to keep the page quick"
    if squares and some_heads:
        which = "square is that head" if len(heads) == 1 else "squares are these heads, left to right"
        return f"{showing}: the coloured {which}; the Head picker (include_heads) chooses others."
    both = heads is not None and not squares  # the model view, which trades layers for heads
    return f"{showing}; {'include_layers and include_heads choose' if both else 'include_layers chooses'} others."


def _numbers(noun: str, indices: list[int]) -> str:
    """"layer 3", "layers 0, 8, 16", "heads 0–3"."""
    if len(indices) == 1:
        return f"{noun} {indices[0]}"
    if len(indices) > 2 and indices == list(range(indices[0], indices[-1] + 1)):
        return f"{noun}s {indices[0]}–{indices[-1]}"
    return f"{noun}s {', '.join(map(str, indices))}"


# ---------------------------------------------------------------- the page


@dataclass(frozen=True)
class ViewPage:
    """A composed view: bertviz's markup and the packed numbers, written out as a page with the libraries either
    inlined or loaded from where the app serves them. Composing (packing the numbers) is the costly part, so the
    app composes once for both the page it shows and the file it offers for download."""

    title: str  # e.g. "head view · preln-mini"
    vis_html: str
    data_json: str  # the packed numbers and bertviz's params, as _script_json writes them
    view_js_name: str  # bertviz's script that draws it
    note: str | None  # a line above the view, saying which layers and heads it includes when not all
    height: int  # pixels the view draws in

    @classmethod
    def of(cls, trace: Trace, what: str, vis_html: str, data: dict, view_js_name: str, note: str | None,
           height: int) -> ViewPage:
        return cls(f"{what} · {trace.model_name}", vis_html, _script_json(data), view_js_name, note, height)

    def html(self, asset_url: str | None = None) -> str:
        """The document: None inlines the libraries, else they load from `asset_url` (the app's static folder)."""
        return _page(self, asset_url)

    def write(self, path: Path) -> Path:
        """Write the standalone document (libraries inlined) to `path`; return it."""
        path.write_text(self.html(None), encoding="utf-8")
        return path


def _script_json(value) -> str:
    """JSON that is safe inside <script>: no `</script>`, `<!--` or `]]>` can appear, whatever strings it holds."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode() + "'"


# Named modules for the libraries already loaded as globals: bertviz's `requirejs(['jquery', 'd3'], …)` then
# resolves without loading anything. d3 and jQuery load before require.js because d3's UMD header calls an
# anonymous define() whenever one exists, which require.js refuses outside a module it loads itself.
_DEFINE = "define('d3', [], function () { return window.d3; }); define('jquery', [], function () { return window.jQuery; });"

# Unpacks the numbers into the nested arrays bertviz's JavaScript reads, then runs the view. Inflating is native
# and quick; building millions of JavaScript numbers is not, so each layer's arrays are built when the view first
# reads that layer (the head and neuron views read one at a time).
_BOOT = r"""
(function () {
  "use strict";
  const spec = JSON.parse(document.getElementById("rpln-bertviz-data").textContent);
  async function inflate(b64) {
    const text = atob(b64), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  // An array of `count` layers whose element l is build(l), built on first read.
  function lazyLayers(count, build) {
    const layers = new Array(count);
    for (let l = 0; l < count; l++) {
      let built = null;
      Object.defineProperty(layers, l, {enumerable: true, get: () => built || (built = build(l))});
    }
    return layers;
  }
  // Layer l of a packed [layers, heads, rows, cols] tensor as [heads][rows][cols] arrays, keeping rows r0..r1 and
  // columns c0..c1 (a filter's slice).
  function layerOf(part, values, l, rows, cols) {
    const [, H, S, T] = part.shape, out = new Array(H);
    for (let h = 0; h < H; h++) {
      const scale = part.levels ? 1 / part.levels : part.scales[l * H + h], head = out[h] = [];
      for (let i = rows[0]; i < rows[1]; i++) {
        const start = ((l * H + h) * S + i) * T, row = new Array(cols[1] - cols[0]);
        for (let j = cols[0]; j < cols[1]; j++) row[j - cols[0]] = values[start + j] * scale;
        head.push(row);
      }
    }
    return out;
  }
  async function unpack(part) {
    const bytes = await inflate(part.data);
    const values = part.levels ? bytes : new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    return (rows, cols) => lazyLayers(part.shape[0], l => layerOf(part, values, l, rows, cols || [0, part.shape[3]]));
  }
  async function main() {
    const packed = spec.packed, params = spec.params;
    const attention = await unpack(packed.attention);
    const queries = packed.queries ? await unpack(packed.queries) : null;
    const keys = packed.keys ? await unpack(packed.keys) : null;
    for (const name of Object.keys(params.attention)) {
      const view = params.attention[name], f = spec.filters[name];
      view.attn = attention(f.rows, f.cols);
      if (queries) {
        view.queries = queries(f.rows);
        view.keys = keys(f.cols);
      }
    }
    window.bertviz_params = params;  // where neuron_view.js reads them
    if (spec.layer_labels) {  // neuron_view.js numbers the included layers 0, 1, …: show their real numbers
      const menu = document.querySelector("#" + params.root_div_id + " #layer");
      new MutationObserver(() => {
        for (const option of menu.options) {
          const label = String(spec.layer_labels[+option.value]);
          if (option.textContent !== label) option.textContent = label;
        }
      }).observe(menu, {childList: true});
    }
    window.rplnBertvizView(params);
  }
  main().catch(error => {
    const note = document.getElementById("rpln-bertviz-note");
    note.textContent = "This view could not be drawn: " + error;
    note.hidden = false;
  });
})();
"""


def _inlinable(source: str, what: str) -> str:
    """`source` unchanged, if it can sit inside <script>…</script>: no `</script` to end it early, no `<!--`."""
    if re.search(r"</script|<!--", source, re.IGNORECASE):
        raise RplnError(f"{what} cannot be inlined in a page as it is.")
    return source


# bertviz's neuron view draws its expanded form (each token's query, keys, products and their lines: three lines per
# query and key) as it draws the collapsed one, though it shows it only after a click on a token's ⊕: 65,664 SVG
# lines for one head at 128 tokens, 2.6 s in Chromium here. These edits draw it on that first click instead. Each
# is checked against the installed script (bertviz is pinned), so a changed script is an error, not a silent no-op.
_NEURON_DEFERRALS = (
    (  # render(): keep the expanded form's drawing for later, unless it is already showing
        "renderVisExpanded(svg, leftText, rightText, queries, keys);",
        "config.drawExpanded = function () { config.drawExpanded = function () {}; "
        "renderVisExpanded(svg, leftText, rightText, queries, keys); }; "
        "if (config.expanded == true) { config.drawExpanded(); }",
    ),
    (  # showExpanded(): draw it on the first click
        "function showExpanded() {",
        "function showExpanded() { config.drawExpanded();",
    ),
)


def _deferring_expansion(neuron_js: str) -> str:
    for original, deferred in _NEURON_DEFERRALS:
        if neuron_js.count(original) != 1:
            raise RplnError(f"bertviz's neuron_view.js has changed: {original!r} is not there once; pin bertviz==1.4.1.")
        neuron_js = neuron_js.replace(original, deferred)
    return neuron_js


def _view_script(name: str) -> str:
    """bertviz's view script `name` as our pages run it (the neuron view with _NEURON_DEFERRALS)."""
    script = _bertviz_js(name)
    return _deferring_expansion(script) if name == "neuron_view.js" else script


def _view_function(view_js: str) -> str:
    """bertviz's view script as a function of its params, so that it runs once the numbers are unpacked. Its
    require.config paths point at CDNs; they are never used (the modules are defined already) and are blanked."""
    body = re.sub(r"(['\"])https?://[^'\"]*\1", "''", view_js.replace(_MARKER, "RPLN_PARAMS"))
    return f"window.rplnBertvizView = function (RPLN_PARAMS) {{\n{_inlinable(body, 'bertviz view script')}\n}};"


def _page(view: ViewPage, asset_url: str | None) -> str:
    """The whole document: libraries, bertviz's markup, the data, bertviz's view script and the unpacking script.
    A Content-Security-Policy allows exactly these scripts (by hash, or from `asset_url`) and no other request."""
    note, height = view.note, view.height
    scripts = [_DEFINE, _view_function(_view_script(view.view_js_name)), _BOOT]
    if asset_url is None:
        sources = [_inlinable(_library_source(lib.path), lib.name) for lib in libraries()]
        library_tags = "".join(f"<script>{source}</script>\n" for source in sources)
        allowed = [_csp_hash(source) for source in sources]
    else:
        prefix = asset_url.rstrip("/")
        urls = [f"{prefix}/{lib.path.relative_to(ASSET_DIR).as_posix()}" for lib in libraries()]
        library_tags = "".join(f'<script src="{html.escape(url)}"></script>\n' for url in urls)
        allowed = [_csp_source(prefix)]
    allowed += [_csp_hash(script) for script in scripts]
    csp = f"default-src 'none'; script-src {' '.join(allowed)}; style-src 'unsafe-inline'; img-src data:"
    note_html = f'<p id="rpln-bertviz-note"{"" if note else " hidden"}>{html.escape(note or "")}</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">\n'
        f'<meta name="rpln-height" content="{height + (24 if note else 0)}">\n'
        f"<title>{html.escape(view.title)}</title>\n"
        # A white page, as in a notebook: bertviz's dark mode paints its own black (and keeps black axis labels).
        "<style>body { margin: 8px; background: #fff; color: #202020; "
        "font-family: 'Helvetica Neue', Helvetica, Arial, sans-serif; } "
        "#rpln-bertviz-note { font-size: 13px; opacity: .75; margin: 0 0 6px; }</style>\n"
        f"</head>\n<body>\n{library_tags}<script>{scripts[0]}</script>\n{note_html}\n{view.vis_html}\n"
        f'<script type="application/json" id="rpln-bertviz-data">{view.data_json}</script>\n'
        f"<script>{scripts[1]}</script>\n<script>{scripts[2]}</script>\n</body>\n</html>\n"
    )


def _csp_source(prefix: str) -> str:
    """The CSP source that allows scripts under `prefix`: that folder of an absolute http(s) URL, the scheme of any
    other absolute URL (file:), else the page's own origin ('self': Gradio's /gradio_api/file=…)."""
    if re.match(r"https?://", prefix):
        return prefix + "/"
    scheme = re.match(r"([a-z][a-z0-9+.-]*):", prefix)
    return f"{scheme.group(1)}:" if scheme else "'self'"


def iframe_html(page: str, *, title: str, max_height: int = 1000) -> str:
    """`page` in a sandboxed <iframe srcdoc>, for gr.HTML (which does not run scripts itself): as tall as the view
    draws, up to `max_height` pixels (then it scrolls inside)."""
    natural = re.search(r'<meta name="rpln-height" content="(\d+)">', page)
    height = min(max_height, int(natural.group(1))) if natural else max_height
    return (
        f'<iframe sandbox="allow-scripts" title="{html.escape(title)}" srcdoc="{html.escape(page)}" '
        f'style="width: 100%; height: {height}px; border: 0;"></iframe>'
    )
