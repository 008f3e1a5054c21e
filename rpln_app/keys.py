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
    "exports",
)
