"""Figures of PreLN Explorer: pure functions from a trace or a task result to a plotly figure, an image or HTML.

Nothing here runs a model or imports Gradio. One module per part of the model: `attention`, `layernorm`,
`residual`, `lens`; `tasks` draws the predictions, `captions` explains each figure, `export` writes the
statistics as CSV/JSON. Every string from the user or the tokenizer passes through `text.plot_label`
(figures) or `html.escape` (HTML) before it is shown; token strings through `text.visible_token` first, so a
token that is only whitespace shows as ␣ or ⏎ rather than as an empty label.

Names: `names` holds the one scheme every figure uses. Layer l is the trace's `blocks.l`, counted from 0 (axis
"layer (blocks.l)", ticks 0 … L-1); heads count from 0; the residual stream is `embed`, then `resid_post[l]`, the
output of layer l (ticks "embed", 0 … L-1; hover and the logit lens's rows give the full name).

Axes: sizes such as norms are drawn from zero, so a flat line reads as flat; only values spanning more than
tenfold get a log axis (`layout.value_axis`), and every log axis is labelled with whole numbers or powers of
ten (`layout.log_axis`).
"""
