"""The shape of one encoder layer, read from the loaded model rather than from its class name.

One tiny forward pass records what layer 0's LayerNorms and sublayers receive and return; where each
LayerNorm sits relative to the residual stream is then proven with tensor comparisons. In eval mode
dropout is the identity, so a residual sum recomputed here equals the model's own bit for bit.

    pre-LN:  x = x + attn(ln1(x));  x = x + ffn(ln2(x))       the stream itself is never normalised
    post-LN: x = ln1(x + attn(x));  x = ln2(x + ffn(x))       the stream is normalised after each add
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .errors import RplnError
from .load import Architecture, LoadedModel

StepKind = Literal["layernorm", "attention", "ffn", "add"]


@dataclass(frozen=True)
class LayerStep:
    """One operation inside a layer, in data-flow order."""

    kind: StepKind
    module: str  # path inside the layer where the step starts, e.g. "attention.LayerNorm"; "" for the add
    label: str  # short text for diagrams


@dataclass(frozen=True)
class LayerLayout:
    """Where the LayerNorms of an encoder layer sit, as observed in one forward pass."""

    architecture: Architecture  # decided by the observed data flow, not by the config
    steps: tuple[LayerStep, ...]  # from the layer's input to its output
    # (i, j): the stream branches off just before steps[i] and is added back at steps[j] (an "add")
    residual_spans: tuple[tuple[int, int], ...]
    final_layernorm: bool  # a LayerNorm normalises the last layer's output before the heads read it
    summary: str  # one plain sentence for captions


@dataclass(frozen=True)
class Sublayer:
    """A sublayer, known by the module that receives its input and the one that produces its output."""

    kind: StepKind
    label: str
    opens: str
    closes: str


# Both architectures share these module paths; only the LayerNorms move between them.
SUBLAYERS = (
    Sublayer("attention", "Self-attention", opens="attention.self", closes="attention.output.dense"),
    Sublayer("ffn", "Feed-forward", opens="intermediate.dense", closes="output.dense"),
)
OPENED_BY = {sublayer.opens: sublayer for sublayer in SUBLAYERS}
CLOSED_BY = {sublayer.closes: sublayer for sublayer in SUBLAYERS}
LAYERNORM_LABEL = "LayerNorm"
ADD = LayerStep("add", "", "+ residual")

# The two layers we recognise, as (kinds in order, residual spans). A LayerNorm inside a span sits on
# the branch (before its sublayer); one outside sits on the stream (after the add).
PATTERNS: dict[Architecture, tuple[tuple[StepKind, ...], tuple[tuple[int, int], ...]]] = {
    "pre-ln": (("layernorm", "attention", "add", "layernorm", "ffn", "add"), ((0, 2), (3, 5))),
    "post-ln": (("attention", "add", "layernorm", "ffn", "add", "layernorm"), ((0, 1), (3, 4))),
}
PLACEMENT_SENTENCE: dict[Architecture, str] = {
    "pre-ln": "Each LayerNorm normalises a copy of the residual stream on its way into a sublayer, "
    "so the stream itself is only ever added to",
    "post-ln": "Each sublayer's output is added to the residual stream and the sum is normalised, "
    "so the stream is re-normalised twice in every layer",
}
FINAL_CLAUSE = {
    True: "a final LayerNorm after the last layer normalises it before the heads read it.",
    False: "no LayerNorm follows the last layer, whose output is already normalised.",
}
PROBE_TEXT = "a b"  # any few tokens do: only the data flow matters, not the values


@dataclass
class Call:
    """One recorded module call: its main input and output."""

    module: str  # path inside layer 0
    input: Tensor
    output: Tensor


@dataclass
class Recording:
    """What the probe pass saw."""

    layer_in: Tensor  # [1, tokens, hidden] the stream entering layer 0
    layer_out: Tensor  # [1, tokens, hidden] the stream leaving layer 0
    calls: list[Call]  # layer 0's LayerNorm and sublayer calls, in call order
    last_layer_out: Tensor  # [1, tokens, hidden] the output of the last layer
    outer_layernorm_inputs: list[Tensor]  # inputs of LayerNorms outside the layers (embeddings, final)


def layer_layout(loaded: LoadedModel) -> LayerLayout:
    """The layout of encoder layer 0 of `loaded`, verified on one tiny forward pass.

    Raises RplnError if the layer is neither pre-LN nor post-LN.
    """
    with loaded.lock:  # the probe's hooks sit on the shared modules
        recording = record_probe_pass(loaded)
    steps, spans = trace_data_flow(recording)
    kinds = tuple(step.kind for step in steps)
    architecture = next((arch for arch, pattern in PATTERNS.items() if pattern == (kinds, spans)), None)
    if architecture is None:
        order = ", ".join(f"{step.label} ({step.module})" if step.module else step.label for step in steps)
        raise RplnError(f"Layer 0 of '{loaded.name}' is neither pre-LN nor post-LN: it runs {order}.")
    final = any(_same(x, recording.last_layer_out) for x in recording.outer_layernorm_inputs)
    summary = f"{PLACEMENT_SENTENCE[architecture]}; {FINAL_CLAUSE[final]}"
    return LayerLayout(architecture, steps, spans, final, summary)


def record_probe_pass(loaded: LoadedModel) -> Recording:
    """Run the body once on a few tokens with temporary hooks (always removed) and return what they saw."""
    body = loaded.body
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if not layers:
        raise RplnError(f"'{loaded.name}' has no encoder.layer modules: it is not a RoBERTa encoder.")
    first, last = layers[0], layers[-1]
    watched = {path: module for path, module in first.named_modules() if isinstance(module, nn.LayerNorm)}
    for sublayer in SUBLAYERS:
        for path in (sublayer.opens, sublayer.closes):
            try:
                watched[path] = first.get_submodule(path)
            except AttributeError as error:
                raise RplnError(f"Layer 0 of '{loaded.name}' has no module '{path}'.") from error
    outer = [m for p, m in body.named_modules() if isinstance(m, nn.LayerNorm) and not p.startswith("encoder.layer.")]

    seen: dict[str, Tensor] = {}
    calls: list[Call] = []
    outer_inputs: list[Tensor] = []
    handles = []

    def keep(key: str):
        def hook(module, args, kwargs, output):
            seen[key + ".in"], seen[key + ".out"] = _main_tensor(args, kwargs), _main_tensor(output)

        return hook

    def log_call(path: str):
        def hook(module, args, kwargs, output):
            calls.append(Call(path, _main_tensor(args, kwargs), _main_tensor(output)))

        return hook

    def log_outer(module, args, kwargs, output):
        outer_inputs.append(_main_tensor(args, kwargs))

    was_training = body.training
    try:
        handles.append(first.register_forward_hook(keep("first"), with_kwargs=True))
        handles.append(last.register_forward_hook(keep("last"), with_kwargs=True))
        handles += [module.register_forward_hook(log_call(path), with_kwargs=True) for path, module in watched.items()]
        handles += [module.register_forward_hook(log_outer, with_kwargs=True) for module in outer]
        body.eval()  # dropout would break the exact residual sums the checks rely on
        device = next(body.parameters()).device
        inputs = loaded.tokenizer(PROBE_TEXT, return_tensors="pt").to(device)
        with torch.no_grad():
            body(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
        body.train(was_training)
    return Recording(seen["first.in"], seen["first.out"], calls, seen["last.out"], outer_inputs)


def trace_data_flow(recording: Recording) -> tuple[tuple[LayerStep, ...], tuple[tuple[int, int], ...]]:
    """Follow the residual stream through layer 0's calls: the steps in order and the residual spans.

    Each LayerNorm must read the stream; it sits on the branch if the next sublayer reads its output
    while the stream skips it, and on the stream if its output is what flows on.
    """
    calls = recording.calls
    _check_sublayer_order(calls)
    steps: list[LayerStep] = []
    spans: list[tuple[int, int]] = []
    stream = recording.layer_in  # the residual stream as it stands
    branch_in: Tensor | None = None  # what a pre-norm handed to the next sublayer
    branch_from: int | None = None  # the step before which the current branch left the stream
    for index, call in enumerate(calls):
        if call.module in OPENED_BY:
            sublayer = OPENED_BY[call.module]
            _expect(call.input, stream if branch_in is None else branch_in, f"{call.module} reads the stream")
            branch_from = len(steps) if branch_from is None else branch_from
            steps.append(LayerStep(sublayer.kind, call.module, sublayer.label))
        elif call.module in CLOSED_BY:
            summed = _stream_after(calls, index, recording.layer_out)
            _expect(summed, stream + call.output, f"the output of {call.module} is added to the stream")
            steps.append(ADD)
            spans.append((branch_from, len(steps) - 1))
            stream, branch_in, branch_from = summed, None, None
        else:
            _expect(call.input, stream, f"{call.module} reads the residual stream")
            if _feeds_next_branch(calls, index, recording.layer_out):
                branch_from, branch_in = len(steps), call.output
            else:
                stream = call.output  # post-norm: the normalised sum is the stream from now on
            steps.append(LayerStep("layernorm", call.module, LAYERNORM_LABEL))
    _expect(recording.layer_out, stream, "the layer outputs the residual stream")
    return tuple(steps), tuple(spans)


def _feeds_next_branch(calls: list[Call], index: int, layer_out: Tensor) -> bool:
    """Whether the LayerNorm at calls[index] is a pre-norm: the next sublayer is added back to its input.

    Otherwise its output must be what flows on (the next residual, or the layer's output).
    """
    norm = calls[index]
    close = next((i for i in range(index + 1, len(calls)) if calls[i].module in CLOSED_BY), None)
    if close is None:
        _expect(layer_out, norm.output, f"{norm.module}, the last call, produces the layer's output")
        return False
    summed = _stream_after(calls, close, layer_out)
    branch = calls[close].output
    if _same(summed, norm.input + branch):
        return True
    _expect(summed, norm.output + branch, f"{norm.module} is either before its sublayer or after the add")
    return False


def _stream_after(calls: list[Call], close: int, layer_out: Tensor) -> Tensor:
    """The stream right after the sublayer closing at calls[close] was added back: what is read next."""
    return calls[close + 1].input if close + 1 < len(calls) else layer_out


def _check_sublayer_order(calls: list[Call]) -> None:
    """Each sublayer runs once, attention then feed-forward, with nothing of ours inside it."""
    expected = [path for s in SUBLAYERS for path in (s.opens, s.closes)]
    positions = [i for i, call in enumerate(calls) if call.module in expected]
    order = [calls[i].module for i in positions]
    nested = any(positions[k + 1] != positions[k] + 1 for k in range(0, len(positions) - 1, 2))
    if order != expected or nested:
        raise RplnError(f"Layer 0 calls {', '.join(call.module for call in calls)}; expected {', '.join(expected)}.")


def _expect(actual: Tensor, expected: Tensor, claim: str) -> None:
    if not _same(actual, expected):
        raise RplnError(f"Layer 0 is neither pre-LN nor post-LN: the check that {claim} failed.")


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float())


def _main_tensor(args, kwargs=None) -> Tensor:
    """The hidden states a module was called with (first positional or `hidden_states`), or returned."""
    if isinstance(args, Tensor):
        return args.detach().clone()  # a later in-place op must not change what we compare
    if isinstance(args, (tuple, list)) and args:
        return _main_tensor(args[0])
    if kwargs and "hidden_states" in kwargs:
        return kwargs["hidden_states"].detach().clone()
    if hasattr(args, "last_hidden_state"):
        return args.last_hidden_state.detach().clone()
    raise RplnError("A hooked module was called without hidden states.")
