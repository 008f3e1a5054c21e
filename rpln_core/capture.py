"""One forward pass that records everything inside the model: the trace.

Vocabulary (used in trace fields, exports and chart titles alike):
- `embed`: the embedding output, which is also `resid_pre[0]`;
- `resid_pre[l]`, `resid_mid[l]`, `resid_post[l]`: the residual stream entering layer l, after its
  attention branch has been added (post-LN: and normalised), and leaving it;
- `attn_out[l]`, `ffn_out[l]`: what the attention and feed-forward branches add to the stream;
- `blocks.{l}.attn.pattern`: the attention weights (`attentions[l]`); `blocks.{l}.attn.q`, `blocks.{l}.attn.k`:
  the query and key vectors of every head (`queries[l]`, `keys[l]`, opt-in), before the 1/√d scaling, so that
  `softmax(q·kᵀ/√d + mask)` is the pattern;
- LayerNorms: `embed.ln`, `blocks.{l}.ln1`, `blocks.{l}.ln2`, `ln_final` (pre-LN only), `lm_head.ln`.

How the trace differs from `model(..., output_hidden_states=True)`:
- post-LN: not at all. `embed` is `hidden_states[0]` and `resid_post[l]` is `hidden_states[l + 1]`.
- pre-LN: the same, except for the last layer. The trace's `resid_post[-1]` is the raw stream leaving the last
  layer, before the final LayerNorm (it equals `ln_final_in`); transformers 5's `hidden_states[-1]` (and
  `last_hidden_state`) is after it, which the trace holds as `ln_final_out`. The residual stream's growth
  through depth, which is what pre-LN is about, would be hidden by reading `hidden_states[-1]`.

Half-precision models (bfloat16, float16) are captured in their own dtype; the logit lens runs the model's
own head in that dtype too. Every statistic (norms, LayerNorm moments, entropies) is float32 whatever the model.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from .errors import RplnError
from .load import LoadedModel
from .reductions import mean_and_variance, row_entropy, token_norms
from .tokens import Tokens


@dataclass
class CaptureOptions:
    """How much of the pass to keep, and in which precision."""

    # float16 halves the memory of the two big tensors; statistics are always computed in float32.
    residual_dtype: torch.dtype = torch.float16
    attention_dtype: torch.dtype = torch.float16
    # Attentions grow with tokens²: past this many bytes they are kept as 8-bit floats (e5m2: ~10%
    # relative precision, enough to draw them), while their entropy is computed exactly during the pass.
    # At 512 tokens on a 24-layer, 16-head model that is 96 MiB instead of 192 MiB. None: never.
    attention_budget_bytes: int | None = 64 * 2**20
    lens_top_k: int = 5
    # LayerNorm inputs wait until this many bytes are pending, then their statistics are computed together:
    # a handful of kernels for many LayerNorms instead of a dozen each, whose per-op overhead dominated a small
    # model's capture. The bound keeps what waits small next to a large model's activations.
    layernorm_batch_bytes: int = 4 * 2**20
    # The query and key vectors (trace.queries, trace.keys) for views that explain a pattern from q·k. Off by
    # default: they cost two copies per layer and 2 · layers · tokens · hidden values of memory.
    queries_and_keys: bool = False
    # None: the attention dtype. They get their own allowance of attention_budget_bytes (q and k together); past it
    # they drop to float16 if they were wider, else they are not kept (with a notice): in 8 bits, q·k over a head's
    # 64 dimensions would be too far off to explain any pattern. They grow with tokens, not tokens²: past
    # 2 · head_dim tokens (128) they are smaller than the attentions; at 512 tokens on a 24-layer, 1024-wide model
    # they take 48 MiB and fit.
    queries_and_keys_dtype: torch.dtype | None = None


@dataclass
class LayerNormStats:
    """What one LayerNorm saw and did, per token position, with its learned γ and β."""

    name: str  # our vocabulary, e.g. "blocks.3.ln1"
    module: str  # where it lives in transformers, e.g. "encoder.layer.3.attention.LayerNorm"
    layer: int | None  # None for LayerNorms outside the layers
    placement: str  # plain words for captions, e.g. "before attention"
    positions: list[int]  # the token positions described (the MLM head only sees the masked ones)
    mean: Tensor  # [positions] mean of the input over the hidden dimension
    std: Tensor  # [positions] standard deviation of the input (biased, as LayerNorm computes it)
    scale: Tensor  # [positions] 1/sqrt(var + eps): the factor the LayerNorm multiplies by
    max_abs: Tensor  # [positions] largest |input| over the hidden dimension
    abs_mean_per_dim: Tensor  # [hidden] mean |input| over positions: outlier dimensions stand out
    weight: Tensor  # [hidden] γ
    bias: Tensor  # [hidden] β


@dataclass
class LogitLens:
    """Each stream read through the final LayerNorm (pre-LN) and the LM head: its top-k tokens."""

    positions: list[int]  # token positions read
    streams: list[str]  # "embed", then "layer 1" … "layer L" (the output of each layer)
    top_ids: Tensor  # [streams, positions, k]
    top_probs: Tensor  # [streams, positions, k]
    top_strings: list[list[list[str]]]  # [streams][positions][k]


@dataclass
class Trace:
    """Everything one forward pass did, for one input (batch dimension removed).

    Pre-LN: `resid_post[-1]` is before the final LayerNorm, where transformers' `hidden_states[-1]` is after it
    (`ln_final_out`). Post-LN: `embed` and `resid_post` are exactly `hidden_states`. Stored tensors keep
    `CaptureOptions`' dtypes; norms, entropies and LayerNorm statistics are float32."""

    model_name: str
    architecture: str  # "pre-ln" or "post-ln"
    tokens: Tokens
    attentions: Tensor  # [layers, heads, tokens, tokens], rows are queries and sum to 1
    embed: Tensor  # [tokens, hidden]
    resid_mid: Tensor  # [layers, tokens, hidden]
    resid_post: Tensor  # [layers, tokens, hidden]
    ln_final_in: Tensor | None  # [tokens, hidden], pre-LN only: the stream before the final LayerNorm…
    ln_final_out: Tensor | None  # … and after it, which is what the task heads read
    resid_pre_norm: Tensor  # [layers, tokens] L2 norms, float32 whatever the storage dtype
    resid_mid_norm: Tensor  # [layers, tokens]
    resid_post_norm: Tensor  # [layers, tokens]
    attn_out_norm: Tensor  # [layers, tokens] norm of what the attention branch adds
    ffn_out_norm: Tensor  # [layers, tokens] norm of what the feed-forward branch adds
    layernorms: list[LayerNormStats]  # in the order they ran
    logit_lens: LogitLens | None = None
    notices: list[str] = field(default_factory=list)
    # [layers, heads, tokens] entropy (nats) of each query's attention, from the full-precision weights;
    # analysis uses it when `attentions` had to be stored in 8 bits.
    attention_entropy: Tensor | None = None
    # `blocks.{l}.attn.q` and `.k`: the outputs of the query and key projections (bias included) split into heads,
    # before the 1/√d scaling. Only with CaptureOptions(queries_and_keys=True), else None.
    queries: Tensor | None = None  # [layers, heads, tokens, head_dim]
    keys: Tensor | None = None  # [layers, heads, tokens, head_dim]

    @property
    def resid_pre(self) -> Tensor:
        """[layers, tokens, hidden] the stream entering each layer: the embedding, then each layer's output."""
        return torch.cat([self.embed[None], self.resid_post[:-1]])

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]

    def layernorm(self, name: str) -> LayerNormStats:
        """The statistics of the LayerNorm called `name` (see the module docstring)."""
        for stats in self.layernorms:
            if stats.name == name:
                return stats
        raise KeyError(name)


# Where each LayerNorm sits, per architecture: module-path pattern -> (our name, placement in words).
LAYERNORM_SITES = {
    "pre-ln": [
        (r"embeddings\.LayerNorm", "embed.ln", "after the embeddings"),
        (r"encoder\.layer\.(\d+)\.attention\.LayerNorm", "blocks.{}.ln1", "before attention"),
        (r"encoder\.layer\.(\d+)\.intermediate\.LayerNorm", "blocks.{}.ln2", "before the feed-forward"),
        (r"LayerNorm", "ln_final", "after the last layer"),
        (r"lm_head\.layer_norm", "lm_head.ln", "inside the LM head"),
    ],
    "post-ln": [
        (r"embeddings\.LayerNorm", "embed.ln", "after the embeddings"),
        (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm", "blocks.{}.ln1", "after attention + residual"),
        (r"encoder\.layer\.(\d+)\.output\.LayerNorm", "blocks.{}.ln2", "after feed-forward + residual"),
        (r"lm_head\.layer_norm", "lm_head.ln", "inside the LM head"),
    ],
}


def layernorm_site(architecture: str, path: str) -> tuple[str, int | None, str]:
    """Our name, layer index and placement for the LayerNorm at module path `path` (body-relative)."""
    for pattern, name, placement in LAYERNORM_SITES[architecture]:
        match = re.fullmatch(pattern, path)
        if match:
            layer = int(match.group(1)) if match.groups() else None
            return name.format(layer), layer, placement
    return path, None, "elsewhere"


@dataclass
class _PendingLayerNorm:
    """A LayerNorm input whose statistics are not computed yet, and everything else its stats will hold."""

    slot: int  # its place in the order the LayerNorms ran
    input: Tensor  # [positions, hidden] float32
    eps: float
    described: dict  # the LayerNormStats fields that are not statistics of the input


class Capture:
    """Context manager that hooks a loaded model and records a trace of the passes run inside it.

    Hooks are removed on exit, also when the forward raises. Batch size must be 1.
    """

    def __init__(self, loaded: LoadedModel, options: CaptureOptions | None = None, lens_positions: Sequence[int] = ()):
        self.loaded = loaded
        self.options = options or CaptureOptions()
        self.lens_positions = list(lens_positions)
        self._handles: list = []
        # One [layers, ...] buffer per kind, filled layer by layer: stacking per-layer copies at the end
        # would hold every captured tensor twice at the peak (~500 MB at 512 tokens on the large model).
        self._layers: dict[str, Tensor] = {}
        self._filled: dict[str, set[int]] = {}
        # stream index -> [positions, hidden] in the model's own dtype: the lens feeds them to the model's head
        self._lens_rows: dict[int, Tensor] = {}
        self._embed: Tensor | None = None
        self._embed_norm: Tensor | None = None
        self._final: tuple[Tensor, Tensor] | None = None
        self._layernorms: list[LayerNormStats | None] = []  # in the order they ran; None until computed
        self._pending_layernorms: list[_PendingLayerNorm] = []
        self._pending_bytes = 0
        self._notices: list[str] = []
        self._attention_dtype = self.options.attention_dtype  # may drop to 8 bits at the first layer
        # Chosen at the first layer's query: None when q and k do not fit the budget and are not kept.
        self._qk_dtype: torch.dtype | None = None
        self._qk_decided = False

    def __enter__(self) -> "Capture":
        self.loaded.lock.acquire()  # released in __exit__: no other pass may fire (or miss) these hooks
        try:
            self._install()
        except BaseException:
            self._remove()
            self.loaded.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._remove()
        finally:
            self.loaded.lock.release()

    def _install(self) -> None:
        body = self.loaded.body
        self._hook(body.embeddings, self._on_embed)
        for index, layer in enumerate(body.encoder.layer):
            self._hook(layer, self._store("post", index, lens_stream=index + 1))
            self._hook(layer.attention, self._store("mid", index))
            self._hook(layer.attention.self, self._store_attention(index))
            if self.options.queries_and_keys:
                heads = layer.attention.self.num_attention_heads
                self._hook(layer.attention.self.query, self._store_projection("q", index, heads))
                self._hook(layer.attention.self.key, self._store_projection("k", index, heads))
            self._hook(layer.attention.output.dense, self._store("attn_out", index))
            self._hook(layer.output.dense, self._store("ffn_out", index))
        if self.loaded.architecture == "pre-ln":
            self._hook(body.LayerNorm, self._on_final_ln)
        for prefix, root in (("", body), ("lm_head.", self.loaded.lm_head)):
            if root is None:
                continue
            for path, module in root.named_modules():
                if isinstance(module, nn.LayerNorm):
                    self._hook(module, self._on_layernorm(prefix + path))

    def _hook(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keep_lens_rows(self, stream: int, hidden: Tensor) -> None:
        if self.lens_positions:
            self._lens_rows[stream] = hidden[0, self.lens_positions].detach()  # indexing copies

    def _put(self, kind: str, index: int, value: Tensor, dtype: torch.dtype | None = None) -> None:
        """Copy one layer's `value` into row `index` of the `kind` buffer, converting to `dtype` in place."""
        if kind not in self._layers:
            shape = (self.loaded.num_layers, *value.shape)
            self._layers[kind] = torch.empty(shape, dtype=dtype or value.dtype, device=value.device)
            self._filled[kind] = set()
        self._layers[kind][index].copy_(value.detach())
        self._filled[kind].add(index)

    def _compact(self, hidden: Tensor) -> Tensor:
        # Converted as soon as it is seen, so the full-precision copy never outlives its layer.
        return hidden.detach().to(self.options.residual_dtype)

    def _on_embed(self, module, args, output) -> None:
        self._embed = self._compact(output[0])
        self._embed_norm = token_norms(output[0])
        self._keep_lens_rows(0, output)

    def _store(self, kind: str, index: int, lens_stream: int | None = None):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if kind in ("attn_out", "ffn_out"):
                self._put(kind, index, token_norms(hidden[0]))
                return
            self._put(kind, index, hidden[0], self.options.residual_dtype)
            self._put(kind + "_norm", index, token_norms(hidden[0]))
            if lens_stream is not None:
                self._keep_lens_rows(lens_stream, hidden)

        return hook

    def _store_attention(self, index: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RplnError(
                    "The model returned no attention weights (it runs sdpa or flash attention); "
                    "load it with attn_implementation='eager'."
                )
            if "attn" not in self._layers:
                self._attention_dtype = self._choose_attention_dtype(weights[0])
            self._put("attn", index, weights[0], self._attention_dtype)
            self._put("entropy", index, row_entropy(weights[0].detach()))

        return hook

    def _store_projection(self, kind: str, index: int, heads: int):
        def hook(module, args, output):
            # [1, tokens, heads · head_dim] -> [heads, tokens, head_dim], as the self-attention splits it
            split = output[0].unflatten(-1, (heads, -1)).transpose(0, 1)
            if not self._qk_decided:
                self._qk_dtype = self._choose_projection_dtype(split)
                self._qk_decided = True
            if self._qk_dtype is not None:
                self._put(kind, index, split, self._qk_dtype)

        return hook

    def _choose_projection_dtype(self, split: Tensor) -> torch.dtype | None:
        """The storage dtype of this pass's queries and keys: the option's, float16 if that is too big, None if
        even float16 is (then they are not kept)."""
        asked = self.options.queries_and_keys_dtype or self.options.attention_dtype
        budget = self.options.attention_budget_bytes
        values = 2 * self.loaded.num_layers * split.numel()  # queries and keys
        size = lambda dtype: values * torch.empty((), dtype=dtype).element_size()  # noqa: E731
        if budget is None or size(asked) <= budget:
            return asked
        if size(torch.float16) <= budget and size(torch.float16) < size(asked):
            self._notices.append(
                f"Queries and keys were kept as float16 instead of {asked} to save memory on this long input "
                f"({size(asked) / 2**20:.0f} MiB at {asked})."
            )
            return torch.float16
        self._notices.append(
            f"Queries and keys were not kept: they would take {size(asked) / 2**20:.0f} MiB at {asked}, more than "
            f"attention_budget_bytes ({budget / 2**20:.0f} MiB). Raise it in CaptureOptions to keep them."
        )
        return None

    def _choose_attention_dtype(self, weights: Tensor) -> torch.dtype:
        """The storage dtype for this pass's attentions: the option's, unless that would exceed the budget."""
        dtype, budget = self.options.attention_dtype, self.options.attention_budget_bytes
        size = self.loaded.num_layers * weights.numel() * torch.empty((), dtype=dtype).element_size()
        if budget is None or size <= budget:
            return dtype
        self._notices.append(
            f"Attention weights were kept as 8-bit floats (about 10% precision) to save memory on this long "
            f"input ({size / 2**20:.0f} MiB at {dtype}); entropies were computed at full precision."
        )
        return torch.float8_e5m2

    def _on_final_ln(self, module, args, output) -> None:
        self._final = (self._compact(args[0][0]), self._compact(output[0]))

    def _on_layernorm(self, path: str):
        name, layer, placement = layernorm_site(self.loaded.architecture, path)

        def hook(module: nn.LayerNorm, args, output):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])  # [positions, hidden]
            positions = self.lens_positions if name == "lm_head.ln" else list(range(x.shape[0]))
            described = dict(
                name=name,
                module=path,
                layer=layer,
                placement=placement,
                positions=positions[: x.shape[0]],
                weight=module.weight.detach().float().clone(),
                bias=module.bias.detach().float().clone(),
            )
            self._pending_layernorms.append(_PendingLayerNorm(len(self._layernorms), x, module.eps, described))
            self._layernorms.append(None)
            self._pending_bytes += x.numel() * x.element_size()
            if self._pending_bytes >= self.options.layernorm_batch_bytes:
                self._compute_layernorm_stats()

        return hook

    def _compute_layernorm_stats(self) -> None:
        """Statistics of every pending LayerNorm input, batched by shape; the inputs are then let go."""
        by_shape: dict[tuple[int, ...], list[_PendingLayerNorm]] = defaultdict(list)
        for pending in self._pending_layernorms:
            by_shape[tuple(pending.input.shape)].append(pending)
        for group in by_shape.values():
            inputs = torch.stack([pending.input for pending in group])  # [layernorms, positions, hidden]
            mean, var = mean_and_variance(inputs)  # [layernorms, positions]
            eps = torch.tensor([pending.eps for pending in group], dtype=var.dtype, device=var.device)
            scale = torch.rsqrt(var + eps[:, None])
            std = var.sqrt()
            magnitude = inputs.abs()
            max_abs = magnitude.amax(dim=-1)  # [layernorms, positions]
            abs_mean_per_dim = magnitude.mean(dim=1)  # [layernorms, hidden]
            for i, pending in enumerate(group):
                self._layernorms[pending.slot] = LayerNormStats(
                    **pending.described,
                    mean=mean[i],
                    std=std[i],
                    scale=scale[i],
                    max_abs=max_abs[i],
                    abs_mean_per_dim=abs_mean_per_dim[i],
                )
        self._pending_layernorms.clear()
        self._pending_bytes = 0

    def trace(self, tokens: Tokens, notices: Sequence[str] = ()) -> Trace:
        """Assemble the trace of the pass that ran inside this context."""
        complete = set(range(self.loaded.num_layers))
        kinds = ["post", "mid", "attn"] + (["q", "k"] if self._qk_dtype is not None else [])
        if self._embed is None or any(self._filled.get(kind) != complete for kind in kinds):
            raise RplnError("No complete forward pass was captured.")
        self._compute_layernorm_stats()
        # The trace is for looking at (figures, exports, numpy): from a GPU pass it comes back to the CPU once.
        layers = {kind: buffer.cpu() for kind, buffer in self._layers.items()}
        post_norm = layers["post_norm"]
        final_in, final_out = (t.cpu() for t in self._final) if self._final else (None, None)
        for stats in self._layernorms:
            for name in ("mean", "std", "scale", "max_abs", "abs_mean_per_dim", "weight", "bias"):
                setattr(stats, name, getattr(stats, name).cpu())
        return Trace(
            model_name=self.loaded.name,
            architecture=self.loaded.architecture,
            tokens=tokens,
            attentions=layers["attn"],
            embed=self._embed.cpu(),
            resid_mid=layers["mid"],
            resid_post=layers["post"],
            ln_final_in=final_in,
            ln_final_out=final_out,
            resid_pre_norm=torch.cat([self._embed_norm[None].cpu(), post_norm[:-1]]),
            resid_mid_norm=layers["mid_norm"],
            resid_post_norm=post_norm,
            attn_out_norm=layers["attn_out"],
            ffn_out_norm=layers["ffn_out"],
            layernorms=list(self._layernorms),
            logit_lens=self._logit_lens() if self.lens_positions and self.loaded.lm_head is not None else None,
            notices=list(notices) + self._notices,
            attention_entropy=layers["entropy"],
            queries=layers.get("q"),
            keys=layers.get("k"),
        )

    @torch.no_grad()
    def _logit_lens(self) -> LogitLens:
        rows = torch.stack([self._lens_rows[i] for i in range(self.loaded.num_layers + 1)])  # [streams, pos, hidden]
        if self.loaded.architecture == "pre-ln":
            rows = self.loaded.body.LayerNorm(rows)  # the heads only ever read the stream after the final LN
        probs = self.loaded.lm_head(rows).float().softmax(dim=-1)
        top_probs, top_ids = probs.topk(self.options.lens_top_k, dim=-1)
        decode = self.loaded.tokenizer.decode
        top_strings = [[[decode([i]) for i in position] for position in stream] for stream in top_ids.tolist()]
        streams = ["embed"] + [f"layer {i + 1}" for i in range(self.loaded.num_layers)]
        return LogitLens(self.lens_positions, streams, top_ids.cpu(), top_probs.cpu(), top_strings)


def run_body(loaded: LoadedModel, inputs) -> Tensor:
    """The encoder's output for `inputs` ([1, tokens, hidden]): what every task head reads.

    The tokenizer's tensors are on the CPU; they go to wherever the model's weights are (a GPU, say).
    Holds the model's lock, so no other request's hooks fire on this pass."""
    device = next(loaded.body.parameters()).device
    with loaded.lock:
        return loaded.body(
            input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
        ).last_hidden_state
