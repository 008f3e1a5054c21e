"""The order of the inside-the-model panel's outputs, shared by the layout and the handlers.

Kept free of model and figure imports so that app.py can lay out the page before those load.
"""

INSIDE_KEYS = (
    "head_view",
    "model_view",
    "entropy",
    "rollout",
    "sinks",
    "ln_scale",
    "ln_table",
    "ln_choice",
    "gamma_beta",
    "abs_input",
    "resid_norm",
    "sublayer",
    "massive",
    "lens",
    # bertviz's views: which one, its layer and head pickers, the page (an iframe) and that view as a download.
    "bertviz_view",
    "bertviz_layer",
    "bertviz_head",
    "bertviz",
    "bertviz_download",
    "exports",  # last: the tests and the benchmark find the downloads there
)

# The panel's tabs whose views a run leaves out (as None): each is drawn when its tab is opened, and after each run
# while it is open (rpln_app.inside.BERTVIZ_ON_OPEN's comment says why). bertviz's and the Export tab work the same
# way with handlers of their own.
DRAWN_ON_OPEN = {
    "layernorm": ("ln_scale", "ln_table", "ln_choice", "gamma_beta", "abs_input"),
    "residual": ("resid_norm", "sublayer", "massive"),
    "lens": ("lens",),
}

# bertviz's views, as the panel's radio names them (the handlers' values are the keys).
BERTVIZ_VIEWS = {"head": "Head view", "model": "Model view", "neuron": "Neuron view"}
