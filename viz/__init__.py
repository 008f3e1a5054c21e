"""Figures of PreLN Explorer: pure functions from a trace or a task result to a plotly figure, an image or HTML.

Nothing here runs a model or imports Gradio. One module per part of the model: `attention`, `layernorm`,
`residual`, `lens`; `tasks` draws the predictions, `captions` explains each figure, `export` writes the
statistics as CSV/JSON. Every string from the user or the tokenizer passes through `text.plot_label`
(figures) or `html.escape` (HTML) before it is shown.
"""
