"""One short caption per figure, for students: what the chart shows and what to look for.

Captions are Markdown: token names such as `<s>` sit in backticks so no renderer reads them as tags.
Keys are the names of the functions that draw the figures. Layers, heads and stream points are named as in
`viz.names`: layer l is `blocks.l` (from 0), and the stream is `embed`, then `resid_post[l]` after layer l.
"""

from __future__ import annotations

CAPTIONS: dict[str, str] = {
    # --- attention ---------------------------------------------------------------------------------
    "head_view": (
        "One attention head in one layer. Each row is a query token and each column a key token it reads "
        "from; every row sums to 1. Look for heads that attend to the previous or next token, to the token "
        "itself, or that put nearly all their weight on `<s>` or `</s>`. Attention shows where a head reads "
        "from, not how much that reading matters for the prediction."
    ),
    "model_view": (
        "Every head at once: rows are layers (numbered from 0, `blocks.0` at the top), columns are heads "
        "(from 0). Each thumbnail is that head's attention pattern shrunk to a small square: dark where the head "
        "concentrates its weight, pale where it spreads it evenly. A diagonal means attending to the token "
        "itself, a line just off the diagonal the previous or next token, a dark first column attention to "
        "`<s>`. The head shown in the head view is framed in orange; click a thumbnail to open it there."
    ),
    "bertviz": (
        "bertviz's views of the same attention (Vig 2019). Head view: every head of one layer at once, a "
        "colour per head; a line joins each token on the left to the tokens it reads on the right, darker for "
        "more weight. Hover over a token to see only its lines; click the colour squares to pick heads. Model "
        "view: a thumbnail per layer and head; click one to enlarge it. Neuron view: how one head computes "
        "its weights: hover over a token on the left and press its ⊕ to see its query q, each token's key k, their "
        "product q × k element by element and the sum q·k, before the softmax turns these into weights. Pairs of "
        "texts (a second text, or a question and its context) get a menu to show only attention between them."
    ),
    "entropy_heatmap": (
        "How spread out each head's attention is, averaged over query tokens, in nats. 0 means every query "
        "looks at a single token; log(number of tokens) means it spreads evenly over all of them. Low-entropy "
        "heads have a sharp pattern (or park everything on one token such as `<s>`); high-entropy heads "
        "average broadly over the sentence."
    ),
    "rollout_heatmap": (
        "Attention rollout (Abnar & Zuidema 2020) multiplies the head-averaged attention of every layer up "
        "to this one, counting the residual connection as half of each layer's mixing, to estimate how much "
        "each output token draws from each input token. It ignores what the value vectors and the "
        "feed-forward layers do, so read it as a rough map of where information can flow, not as an "
        "explanation of the prediction."
    ),
    "sinks_figure": (
        "The share of attention that lands on `<s>`, on `</s>` and on punctuation: per layer averaged over "
        "heads (left), and on `<s>` per head (right). Heads with nothing specific to look for often park "
        "their weight on such tokens, a kind of no-op first described for BERT (Clark et al. 2019) and "
        "later called an attention sink (Xiao et al. 2023)."
    ),
    # --- LayerNorm ---------------------------------------------------------------------------------
    "scale_heatmap": (
        "For each LayerNorm (rows, in the order they run) and each token (columns): the factor 1/σ by which "
        "it multiplies that token's centred input, on a log colour scale. In a pre-LN model `blocks.l.ln1` "
        "and `blocks.l.ln2` read the residual stream itself, which grows with depth, so their 1/σ usually "
        "falls layer by layer: each LayerNorm undoes the growth before its sublayer. In post-LN they read a "
        "stream normalised one sublayer earlier, so the scale stays in a narrow band. Tokens with an unusually "
        "large stream, often `<s>`, stand out with a smaller scale."
    ),
    "stats_table": (
        "One row per LayerNorm: where it sits and its input averaged over tokens (mean, standard deviation σ, "
        "the scale 1/σ, the largest |x|), and how many dimensions of its γ and β are outliers, more than 3 "
        "standard deviations from that vector's mean."
    ),
    "gamma_beta_figure": (
        "The learned gain γ and bias β of one LayerNorm, per hidden dimension: after normalising, dimension i "
        "is multiplied by γ[i] and shifted by β[i]. Circled dimensions lie more than 3 standard deviations "
        "from the mean. Kovaleva et al. 2021 (\"BERT Busters\") found a few such outlier dimensions at the "
        "same positions across layers, and switching them off badly hurts the model. In a freshly initialised "
        "model γ = 1 and β = 0 everywhere, so nothing is flagged."
    ),
    "abs_input_heatmap": (
        "Mean |input| of every LayerNorm (rows) in every hidden dimension (columns), on a log colour scale. "
        "A dimension that is large in every row draws a vertical stripe: such outlier dimensions often match "
        "the ones the γ/β view flags (Kovaleva et al. 2021) and the home of massive activations (Sun et al. "
        "2024). Rows brightening with depth show the residual stream growing."
    ),
    # --- residual stream ----------------------------------------------------------------------------
    "norm_figure": (
        "The mean length (L2 norm) of the residual stream at each point: `embed` (the embeddings), then "
        "`resid_post[l]`, the output of layer l. The axis starts at zero, so a flat line means an unchanged "
        "norm (it turns logarithmic only when the values span more than tenfold). In a pre-LN model nothing "
        "normalises the residual stream between layers (each sublayer reads a normalised copy and adds its "
        "output back), so its norm grows with depth; in post-LN it is re-normalised after every sublayer and "
        "stays flat. The dashed line is an exponential fit: ×1.10 per layer means each layer makes the stream "
        "about 10% longer on average. Xiong et al. 2020 relate this growth to why pre-LN trains stably "
        "without a learning-rate warm-up."
    ),
    "sublayer_figure": (
        "For each layer: the norm of what the attention branch (`attn_out`) and the feed-forward branch "
        "(`ffn_out`) add, next to the norm of the stream they are added to (`resid_pre` before attention, "
        "`resid_mid` before the feed-forward). The axis starts at zero, so heights compare directly. In pre-LN "
        "each branch reads a normalised copy, so its output does not grow along with the stream; where the "
        "stream is much longer than the update, a layer can only nudge it. Hover to see each update as a "
        "fraction of its stream."
    ),
    "massive_figure": (
        "For each point of the residual stream (`embed`, then `resid_post[l]` after layer l): the single "
        "largest |activation| over all tokens and dimensions, and the median |activation|, on a log scale "
        "(each gridline a round number). Sun et al. 2024 found, in large language models, a few "
        "activations thousands of times larger than the median, in fixed dimensions and on tokens such as "
        "the first token or delimiters, acting like biases the model relies on. Look for a gap of orders of "
        "magnitude between the two lines; hover shows the token and dimension holding the largest value."
    ),
    # --- logit lens ---------------------------------------------------------------------------------
    "lens_figure": (
        "The logit lens (nostalgebraist 2020) reads every intermediate stream at the masked position with "
        "the model's own output layers (pre-LN: the final LayerNorm, then the MLM head). Rows run from "
        "`embed` (the embeddings) through `resid_post[l]`, the output of layer l, to the last layer; column 1 "
        "is each stream's top prediction, the next columns the runners-up. Cells are shaded by probability on "
        "a log scale, so 0.001, 0.01 and 0.1 are equal steps; ␣ marks a token that is only a space, ⏎ a line "
        "break. Watch for the layer where the final answer first appears; early layers were never trained to "
        "be read this way, so their guesses are rough."
    ),
    # --- pre-LN versus post-LN ------------------------------------------------------------------------
    "layer_diagram": (
        "One layer of each model, drawn from what its modules did on a test input (hooks checked which "
        "tensor each LayerNorm read and which sum flowed on), not from the class name. The green line is the "
        "residual path. In pre-LN the LayerNorm sits on the branch into each sublayer, so the stream itself "
        "is only ever added to and needs a final LayerNorm at the end; in post-LN (the original Transformer "
        "and BERT/RoBERTa) the stream is normalised after every addition (Xiong et al. 2020, Figure 1)."
    ),
    "residual_comparison_figure": (
        "The average size (L2 norm) of the residual stream at each point (`embed`, then `resid_post[l]` after "
        "layer l), for both models on the same text. The axis starts at zero, so flat reads as flat (it turns "
        "logarithmic only when the values span more than tenfold). Pre-LN never normalises the stream, so "
        "every sublayer's output piles on and the norm grows with depth; post-LN re-normalises after each "
        "sublayer, so the norm stays flat. At "
        "initialisation this is Xiong et al. 2020, Lemma 2: post-LN's E‖x‖² is 3d/2 at every layer, "
        "pre-LN's grows linearly with depth; trained models keep the pattern (step 3 measures it at initialisation)."
    ),
    "layernorm_scale_figure": (
        "Each LayerNorm divides its input by the input's standard deviation σ; this is the average factor 1/σ it "
        "applies, LayerNorm by LayerNorm in depth order, on a log scale. In pre-LN the inputs are the growing residual "
        "stream, so deeper LayerNorms scale down more: that is how pre-LN keeps each sublayer's input the same size "
        "while the stream grows. Hover for the γ/β outlier dimensions (more than 3 standard deviations from the mean, "
        "Kovaleva et al. 2021), which trained LayerNorms develop."
    ),
    "entropy_comparison_figure": (
        "How spread out each head's attention is, in nats, for both models on one colour scale: 0 means "
        "every query looks at one token. Trained on the same data, the two placements learn heads of "
        "similar kinds; differences show where the LayerNorm placement changed what the layers learned."
    ),
    "fill_mask_rows": (
        "Both models' top predictions for each mask in the text. The two twins were trained on the same "
        "data with the same recipe, so any difference comes from where the LayerNorms sit (and from the "
        "randomness of training)."
    ),
    "ablation_figure": (
        "Kovaleva et al. 2021 (\"BERT Busters\") found a few hidden dimensions whose LayerNorm γ and β are "
        "outliers in most layers of BERT, and that zeroing them in every LayerNorm breaks the model while zeroing "
        "as many random dimensions does not. Here each model's shared outlier dimensions (flagged in at least half "
        "of its LayerNorms) are switched off on this text, then random sets of as many (bars: their mean; whiskers: "
        "lowest and highest). Left: how much probability the model still gives its intact top prediction; right: "
        "how far its whole predicted distribution moved. A bar for the outliers far beyond the random ones means "
        "those dimensions carry something the model relies on."
    ),
    "layer_gradients_figure": (
        "Freshly initialised models of the chosen depth, one masked-LM loss, backward: the gradient norm of each "
        "layer's feed-forward output weight, layers numbered from 0 (`blocks.0`). Xiong et al. 2020 (Theorem 1): "
        "post-LN's gradient near the output does not shrink as the model gets deeper, so early updates are large and "
        "post-LN needs a learning-rate warm-up; pre-LN's shrinks with depth and it can train without one. The "
        "per-layer shape depends on the init standard deviation: the default is 0.02·√(1024/width), roberta-large's "
        "relative init; with 0.02 at a small width both models act almost like the identity."
    ),
    "depth_sweep_figure": (
        "The last layer's gradient norm against depth L, for fresh models of each depth, on log-log axes. "
        "Theorem 1 of Xiong et al. 2020: for pre-LN it scales like 1/√L (the dashed line, drawn through the "
        "shallowest model), for post-LN it stays about level. The theorem assumes an idealised initialisation; "
        "with transformers' own init at these small widths pre-LN's gradient falls with depth, but more slowly "
        "than the dashed line. Post-LN's does not fall, so deeper post-LN models take the largest steps right "
        "at the start of training."
    ),
    "residual_init_figure": (
        "The residual-stream norm at initialisation, at `embed` and after each layer (`resid_post[l]`), with "
        "the bounds of Xiong et al. 2020, "
        "Lemma 2 (the band for pre-LN, the level line for post-LN), which the paper proves for an idealised "
        "initialisation (Xavier weights, attention that does not mix tokens). Transformers' own init, used "
        "here, need not land inside them, but the shape holds: pre-LN's norm grows with depth, post-LN's "
        "stays where each LayerNorm puts it."
    ),
    "loss_curves_figure": (
        "Training loss per step of the bundled twins, recorded when they were trained (same data, seed and "
        "recipe). With a learning-rate warm-up both train alike. Without warm-up at a high learning rate "
        "(2e-3) post-LN gets stuck at the unigram baseline while pre-LN learns, as Xiong et al. 2020 and "
        "Liu et al. 2020 describe; at 1e-2 neither trains. Faint lines are single steps, solid lines a "
        "moving average."
    ),
    "gradient_curves_figure": (
        "The gradient norm of one layer per step (log scale), from the same runs. Look at layer 0 (`blocks.0`) without "
        "warm-up at 2e-3: post-LN's gradient falls by about five orders of magnitude in the first fifty steps and "
        "seven by the end, so the layer stops learning, while pre-LN's stays healthy. The whole-model norm hides "
        "this, since the embeddings and output layer still get gradient."
    ),
    # --- task outputs -------------------------------------------------------------------------------
    "fill_mask_figure": (
        "The model's top candidates for the mask and their probabilities (a softmax over the whole "
        "vocabulary, so the bars shown need not add up to 1). ␣ marks a candidate that is only a space, ⏎ a "
        "line break."
    ),
    "classification_figure": (
        "The score of each label from the classification head, which reads the final stream of the `<s>` "
        "token. With a softmax the probabilities add up to 1; with independent (sigmoid) labels they need not."
    ),
    "qa_logits_figure": (
        "The QA head gives every context token a start logit and an end logit; the answer is the span, at "
        "most a few tokens long and ending after it starts, whose start and end logits add up highest. The "
        "shaded tokens are the best answer. Long contexts are read in overlapping windows: this is the "
        "window that held the best answer."
    ),
    "qa_highlight_html": "The context with the model's best answer highlighted.",
    # --- the other heads (viz.heads) ----------------------------------------------------------------
    "tag_spans": (
        "The text with each tagged piece marked by its label. The token-classification head reads every token's "
        "final stream on its own and gives it a label; the aggregation strategy decides how tokens become "
        "rows: `none` keeps one per token, `simple` joins neighbours with the same tag, and `first`, `average` "
        "and `max` first give every word one label (its first token's, the mean over its tokens, its most "
        "confident token's). Labels the model treats as \"outside\" (`O`) are left unmarked."
    ),
    "token_scores_figure": (
        "Every token's probability for every label (a softmax per token, so each column adds up to 1), `<s>` "
        "and `</s>` included although no row reports them. A dark cell alone in its column is a confident "
        "decision; a column of pale cells is a token the model could not place."
    ),
    "choice_figure": (
        "How likely the model finds each choice. The head reads each \"context + choice\" pair on its own, gives "
        "it one number (a logit, from the pooled `<s>` stream), and the softmax over the choices' logits turns "
        "them into probabilities that add up to 1: a choice is only ever judged against the others given."
    ),
    "differing_spans": (
        "The input of the choice whose inside views are shown, as the model read it: `<s>` context `</s></s>` "
        "choice `</s>`. Marked: the tokens that not every choice shares. Up to the first of them, every choice's "
        "pass is the same, token for token, in every layer, since each token reads only this one input; "
        "compare the inside views of two choices from there on."
    ),
    "candidates_figure": (
        "At each step (columns) the model's most probable next tokens (rows, best first), shaded by probability "
        "on a log scale. These are the model's own probabilities, before temperature, top-k and top-p reshape "
        "them for sampling; the outlined cell is the token the step took (greedy decoding always takes rank 1; "
        "sampling may take a lower one, or one outside this list, then nothing is outlined)."
    ),
    "step_lens_figure": (
        "The logit lens at one step of the generation: the stream at the last token, read after each layer "
        "through the model's own output layers (pre-LN: the final LayerNorm, then the LM head), shows what the "
        "model would have predicted next had it stopped at that layer. Watch at which layer the token it chose "
        "reaches rank 1. The attention in the views below is causal: a token reads only itself and the tokens "
        "before it, so every head's pattern is zero above the diagonal."
    ),
}
