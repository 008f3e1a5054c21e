"""The inside-the-model panel that every task tab shows under its result: its layout and its re-drawing events."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from ..handlers import Handlers, user_errors
from ..keys import BERTVIZ_VIEWS, DRAWN_ON_OPEN, INSIDE_KEYS
from .widgets import caption, captioned, plot

@dataclass
class InsidePanel:
    """The components of the inside-the-model views of one tab."""

    layer: gr.Slider
    head: gr.Slider
    components: dict[str, gr.components.Component] = field(default_factory=dict)
    tabs: dict[str, gr.Tab] = field(default_factory=dict)  # by name: all but "attention" draw when opened

    @property
    def outputs(self) -> list:
        return [self.layer, self.head] + [self.components[key] for key in INSIDE_KEYS]

    def wire(self, handlers: Handlers, record: gr.State, runs: list) -> None:
        """Events that re-draw from the run's stored trace (running the model again only if it was evicted).
        `runs`: the events that put a new run in `record` (rpln_app.ui.task_tabs.wire_runs returns them).

        Not in the model's concurrency group: a slider should not wait behind other visitors' runs, and the
        engine's lock keeps a rare re-run correct alongside them."""
        c = self.components
        for slider in (self.layer, self.head):
            slider.change(user_errors(handlers.attention_views), [record, self.layer, self.head],
                          [c["head_view"], c["model_view"]], api_visibility="private")
        c["model_view"].select(user_errors(handlers.model_view_click), [record], [self.layer, self.head],
                               api_visibility="private")
        c["ln_choice"].change(user_errors(handlers.gamma_beta), [record, c["ln_choice"]], c["gamma_beta"],
                              api_visibility="private")
        # bertviz: the radio re-draws only when the visitor picks (.input), as a run resets it together with the
        # page it drew. The sliders use .change, as the others do: Gradio's .release misses a keyboard on the range.
        pickers = [c["bertviz_view"], c["bertviz_layer"], c["bertviz_head"]]
        redraw = dict(fn=user_errors(handlers.bertviz_view), inputs=[record, *pickers],
                      outputs=[c["bertviz"], c["bertviz_download"], c["bertviz_layer"], c["bertviz_head"]],
                      api_visibility="private")
        c["bertviz_view"].input(**redraw)
        c["bertviz_layer"].change(**redraw)
        c["bertviz_head"].change(**redraw)
        self._draw_while_open(handlers, record, runs, redraw)

    def _draw_while_open(self, handlers: Handlers, record: gr.State, runs: list, redraw: dict) -> None:
        """A run leaves out the views of every tab but Attention, and bertviz's page and the downloads
        (rpln_app.inside.BERTVIZ_ON_OPEN says why): opening a tab makes its own, and while it is open each new run
        makes them again. Which tab is open is kept per session."""
        open_tab = gr.State("attention")
        for name, tab in self.tabs.items():
            tab.select(_returning(name), None, open_tab, queue=False, api_visibility="private")
        exports = dict(fn=user_errors(handlers.exports), inputs=[record], outputs=self.components["exports"],
                       api_visibility="private")
        self.tabs["bertviz"].select(**redraw)
        self.tabs["export"].select(**exports)
        for tab, keys in DRAWN_ON_OPEN.items():
            self.tabs[tab].select(user_errors(_drawing(handlers.tab_views, tab)), [record],
                                  [self.components[key] for key in keys], api_visibility="private")
        # One event after each run, whichever tab is open: one request, not one per tab.
        lazy = [key for keys in DRAWN_ON_OPEN.values() for key in keys]
        after_run = dict(fn=user_errors(handlers.open_tab_after_run),
                         inputs=[record, open_tab, *redraw["inputs"][1:]],
                         outputs=[*redraw["outputs"], self.components["exports"], *(self.components[k] for k in lazy)],
                         api_visibility="private")
        for run in runs:
            run.success(**after_run)


def _returning(value):
    return lambda: value


def _drawing(draw, tab: str):
    """`draw` (a handler whose last parameter is the tab) for `tab`, with the parameters Gradio passes it."""
    return lambda *inputs: draw(*inputs, tab)


def inside_panel() -> InsidePanel:
    """Lay out the views of what happened inside the model; values come from rpln_app.inside."""
    with gr.Tabs():
        with gr.Tab("Attention") as attention_tab:
            with gr.Row():
                layer = gr.Slider(0, 1, value=0, step=1, label="Layer")
                head = gr.Slider(0, 1, value=0, step=1, label="Head")
            with gr.Row():
                head_view = plot("Head view", "head_view")
                with gr.Column():
                    model_view = captioned(
                        gr.Image(label="Model view: click a head", type="pil", interactive=False, height=420,
                                 format="png", buttons=["download"]),
                        "model_view",
                    )
            with gr.Row():
                entropy = plot("Attention entropy", "entropy_heatmap")
                rollout = plot("Attention rollout", "rollout_heatmap")
            sinks = plot("Attention sinks", "sinks_figure")
        with gr.Tab("bertviz") as bertviz_tab:
            caption("bertviz")
            bertviz_view = gr.Radio([(label, key) for key, label in BERTVIZ_VIEWS.items()], value="head",
                                    label="View", show_label=False)
            with gr.Row():
                bertviz_layer = gr.Slider(0, 1, value=0, step=1, label="Layer")
                bertviz_head = gr.Slider(0, 1, value=0, step=1, label="Head", visible=False)
            bertviz = gr.HTML(min_height=200)
            bertviz_download = gr.DownloadButton("Download this view (HTML that works offline)", visible=False,
                                                 size="sm", variant="secondary")
        with gr.Tab("LayerNorm") as layernorm_tab:
            ln_scale = plot("1/σ per LayerNorm and token", "scale_heatmap")
            ln_table = captioned(gr.Dataframe(label="LayerNorm statistics", interactive=False), "stats_table")
            ln_choice = gr.Dropdown(label="LayerNorm", choices=[], interactive=True)
            gamma_beta = plot("γ and β", "gamma_beta_figure")
            abs_input = plot("|input| per dimension", "abs_input_heatmap")
        with gr.Tab("Residual stream") as residual_tab:
            resid_norm = plot("Residual norm per layer", "norm_figure")
            sublayer = plot("Sublayer outputs", "sublayer_figure")
            massive = plot("Massive activations", "massive_figure")
        with gr.Tab("Logit lens") as lens_tab:
            lens = plot("Logit lens", "lens_figure")
        with gr.Tab("Export") as export_tab:
            exports = gr.File(label="Statistics as CSV and JSON", file_count="multiple", interactive=False)
    panel = InsidePanel(layer, head)
    panel.components = {key: value for key, value in locals().items() if key in INSIDE_KEYS}
    panel.tabs = {"attention": attention_tab, "bertviz": bertviz_tab, "layernorm": layernorm_tab,
                  "residual": residual_tab, "lens": lens_tab, "export": export_tab}
    return panel
