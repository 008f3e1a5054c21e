"""The trace records what the model really computed, checked against transformers' own eager outputs."""

import pytest
import torch

from rpln_core import CaptureOptions, RplnError
from rpln_core.capture import Capture
from rpln_core.tasks.common import captured_pass
from rpln_core.tokens import encode

FULL = CaptureOptions(residual_dtype=torch.float32, attention_dtype=torch.float32)
TEXT = "The president spoke to the nation, and the cat sat on the mat."
ARCHS = ["pre-ln", "post-ln"]


def capture(model, text=TEXT, head=lambda hidden: hidden, **kwargs):
    encoded = encode(model.tokenizer, text, max_tokens=model.max_tokens)
    output, trace = captured_pass(model, encoded, head, options=kwargs.pop("options", FULL), **kwargs)
    return encoded, output, trace


def hf_forward(model, encoded):
    with torch.no_grad():
        return model.model(**encoded.inputs, output_hidden_states=True, output_attentions=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_attentions_equal_transformers_eager_attentions(loaded, arch):
    model = loaded(arch)
    encoded, _, trace = capture(model)
    reference = torch.stack(hf_forward(model, encoded).attentions)[:, 0]
    assert trace.attentions.shape == (3, 4, len(trace.tokens), len(trace.tokens))
    torch.testing.assert_close(trace.attentions, reference)
    torch.testing.assert_close(trace.attentions.sum(-1), torch.ones(3, 4, len(trace.tokens)))


def test_capture_refuses_a_model_that_silently_drops_attention_weights(loaded, checkpoint_dir):
    from rpln_core.load import load_model

    model = load_model(str(checkpoint_dir("pre-ln", "mlm")))  # a private copy: we switch its attention
    model.model.set_attn_implementation("sdpa")
    with pytest.raises(RplnError, match="no attention weights"):
        capture(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_stream_equals_transformers_hidden_states(loaded, arch):
    model = loaded(arch)
    encoded, body_output, trace = capture(model)
    hidden_states = hf_forward(model, encoded).hidden_states  # embeddings, then each layer's output
    torch.testing.assert_close(trace.embed, hidden_states[0][0])
    torch.testing.assert_close(trace.resid_pre, torch.stack(hidden_states[:-1])[:, 0])
    # transformers 5 returns pre-LN's last hidden state AFTER the final LayerNorm, so compare it there.
    last = trace.ln_final_out if arch == "pre-ln" else trace.resid_post[-1]
    torch.testing.assert_close(last, hidden_states[-1][0])
    torch.testing.assert_close(body_output[0], last)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_trace_differs_from_output_hidden_states_only_after_pre_lns_last_layer(loaded, arch):
    """Pre-LN: the trace's resid_post[-1] is before the final LayerNorm; transformers 5's hidden_states[-1] is after
    it, which the trace holds as ln_final_out. Post-LN: the trace's stream is hidden_states, layer for layer."""
    model = loaded(arch)
    encoded, _, trace = capture(model)
    hidden_states = torch.stack(hf_forward(model, encoded).hidden_states)[:, 0]  # [layers + 1, tokens, hidden]
    torch.testing.assert_close(trace.embed, hidden_states[0])
    torch.testing.assert_close(trace.resid_post[:-1], hidden_states[1:-1])
    if arch == "post-ln":
        torch.testing.assert_close(trace.resid_post[-1], hidden_states[-1])
        assert trace.ln_final_in is None and trace.ln_final_out is None
        return
    torch.testing.assert_close(trace.resid_post[-1], trace.ln_final_in)
    torch.testing.assert_close(trace.ln_final_out, hidden_states[-1])
    with torch.no_grad():
        torch.testing.assert_close(model.body.LayerNorm(trace.resid_post[-1]), hidden_states[-1])
    assert not torch.allclose(trace.resid_post[-1], hidden_states[-1], atol=0.1)


def test_pre_ln_stream_is_the_sum_of_its_branches(loaded):
    """Pre-LN adds each sublayer's output to an untouched residual stream: x_mid = x + attn(LN(x))."""
    _, _, trace = capture(loaded("pre-ln"))
    torch.testing.assert_close((trace.resid_mid - trace.resid_pre).norm(dim=-1), trace.attn_out_norm)
    torch.testing.assert_close((trace.resid_post - trace.resid_mid).norm(dim=-1), trace.ffn_out_norm)
    torch.testing.assert_close(trace.resid_post_norm, trace.resid_post.norm(dim=-1))


def test_post_ln_stream_leaves_every_sublayer_normalised(loaded):
    """Post-LN normalises after each residual add, so every stream point has unit std (times γ=1 at init)."""
    _, _, trace = capture(loaded("post-ln"))
    hidden = trace.resid_post.shape[-1]
    torch.testing.assert_close(trace.resid_post_norm, torch.full_like(trace.resid_post_norm, hidden**0.5), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_layernorm_statistics_match_the_inputs_the_modules_received(loaded, arch):
    model = loaded(arch)
    seen = {}
    modules = dict(model.body.named_modules())
    paths = [p for p, m in modules.items() if isinstance(m, torch.nn.LayerNorm)]
    handles = [
        modules[p].register_forward_pre_hook(lambda m, args, p=p: seen.__setitem__(p, args[0][0].clone()))
        for p in paths
    ]
    try:
        _, _, trace = capture(model)
    finally:
        for handle in handles:
            handle.remove()
    body_stats = [s for s in trace.layernorms if s.name != "lm_head.ln"]
    assert [s.module for s in body_stats] == paths
    for stats in body_stats:
        x = seen[stats.module]
        module = modules[stats.module]
        torch.testing.assert_close(stats.mean, x.mean(-1))
        torch.testing.assert_close(stats.std, x.std(-1, unbiased=False))
        torch.testing.assert_close(stats.max_abs, x.abs().max(-1).values)
        torch.testing.assert_close(stats.weight, module.weight)
        # The recorded scale is the one LayerNorm applies: rebuild the module's output from it.
        rebuilt = (x - stats.mean[:, None]) * stats.scale[:, None] * stats.weight + stats.bias
        torch.testing.assert_close(rebuilt, module(x))


def test_layernorm_names_say_where_each_sits(loaded):
    _, _, pre = capture(loaded("pre-ln"))
    _, _, post = capture(loaded("post-ln"))
    assert pre.layernorm("blocks.0.ln1").module == "encoder.layer.0.attention.LayerNorm"
    assert pre.layernorm("blocks.2.ln2").placement == "before the feed-forward"
    assert pre.layernorm("ln_final").module == "LayerNorm"
    assert post.layernorm("blocks.0.ln1").module == "encoder.layer.0.attention.output.LayerNorm"
    assert post.layernorm("blocks.1.ln2").placement == "after feed-forward + residual"
    with pytest.raises(KeyError):
        post.layernorm("ln_final")  # post-LN has no final LayerNorm


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_of_the_last_layer_is_the_models_own_prediction(loaded, arch):
    model = loaded(arch)
    text = "The cat sat on the <mask> and the <mask>."
    encoded = encode(model.tokenizer, text, max_tokens=model.max_tokens)
    positions = (encoded.inputs["input_ids"][0] == model.tokenizer.mask_token_id).nonzero().flatten().tolist()
    _, trace = captured_pass(model, encoded, lambda h: h, lens_positions=positions, options=FULL)
    logits = hf_forward(model, encoded).logits[0, positions]
    top = logits.softmax(-1).topk(5)
    lens = trace.logit_lens
    assert lens.streams[0] == "embed" and lens.streams[-1] == f"layer {model.num_layers}"
    assert lens.top_ids.shape == (model.num_layers + 1, 2, 5)
    assert lens.top_ids[-1].tolist() == top.indices.tolist()
    torch.testing.assert_close(lens.top_probs[-1], top.values)


def test_hooks_are_removed_after_the_pass_and_after_a_failing_pass(loaded):
    model = loaded("pre-ln")
    count = lambda: sum(len(m._forward_hooks) for m in model.model.modules())  # noqa: E731
    before = count()
    capture(model)
    assert count() == before

    def broken_head(hidden):
        raise ValueError("head failed")

    with pytest.raises(ValueError):
        capture(model, head=broken_head)
    assert count() == before


def test_compact_storage_keeps_statistics_in_full_precision(loaded):
    model = loaded("pre-ln")
    _, _, compact = capture(model, options=CaptureOptions())
    _, _, full = capture(model)
    assert compact.attentions.dtype == torch.float16 and compact.resid_post.dtype == torch.float16
    assert compact.resid_post_norm.dtype == torch.float32
    torch.testing.assert_close(compact.resid_post_norm, full.resid_post_norm)
    torch.testing.assert_close(compact.attentions.float(), full.attentions, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_layernorm_statistics_do_not_depend_on_how_many_inputs_wait_to_be_batched(loaded, arch):
    model = loaded(arch)
    # A one-byte budget computes each LayerNorm's statistics as it runs; the default batches them all.
    _, _, one_by_one = capture(model, options=CaptureOptions(layernorm_batch_bytes=1))
    _, _, batched = capture(model)
    assert [s.name for s in one_by_one.layernorms] == [s.name for s in batched.layernorms]
    for alone, together in zip(one_by_one.layernorms, batched.layernorms):
        for field in ("mean", "std", "scale", "max_abs", "abs_mean_per_dim", "weight", "bias"):
            torch.testing.assert_close(getattr(alone, field), getattr(together, field), msg=field)
        assert alone.positions == together.positions


def test_capture_without_a_forward_pass_is_an_error(loaded):
    model = loaded("pre-ln")
    encoded = encode(model.tokenizer, TEXT, max_tokens=model.max_tokens)
    with Capture(model) as cap:
        pass
    with pytest.raises(RplnError):
        cap.trace(encoded.tokens)


def test_long_inputs_keep_attentions_in_8_bits_with_exact_entropy(loaded):
    """Past the byte budget attentions are stored as float8; the pass still records full-precision entropy."""
    from rpln_core import analysis

    model = loaded("pre-ln")
    _, _, full = capture(model)
    _, _, small = capture(model, options=CaptureOptions(attention_budget_bytes=1024))
    assert small.attentions.dtype == torch.float8_e5m2
    assert any("8-bit" in notice for notice in small.notices)
    torch.testing.assert_close(small.attentions.float(), full.attentions, atol=0.07, rtol=0.13)
    exact = torch.special.entr(full.attentions).sum(-1)
    torch.testing.assert_close(small.attention_entropy, exact)
    torch.testing.assert_close(analysis.attention_entropy_per_query(small), exact)
