"""The layer layout is read from what the modules compute, and the diagram draws exactly that layout."""

from __future__ import annotations

import pytest
from torch import nn
from transformers import RobertaPreLayerNormModel
from transformers.models.roberta_prelayernorm.modeling_roberta_prelayernorm import RobertaPreLayerNormLayer

from rpln_core import synthetic
from rpln_core.architecture import LayerLayout, layer_layout
from rpln_core.errors import RplnError
from rpln_core.load import LoadedModel, random_model
from viz.diagram import layer_diagram

TINY_LAYER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)

# nanoGPT's pre-LN block, x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), read off step by step.
PRE_LN_ORDER = ["LayerNorm", "Self-attention", "+ residual", "LayerNorm", "Feed-forward", "+ residual"]
# The original Transformer: x = ln_1(x + attn(x)); x = ln_2(x + mlp(x)).
POST_LN_ORDER = ["Self-attention", "+ residual", "LayerNorm", "Feed-forward", "+ residual", "LayerNorm"]


def tiny(tokenizer, architecture: str, task: str = "mlm") -> LoadedModel:
    return random_model(architecture, task, tokenizer, **TINY_LAYER)


def labels(layout: LayerLayout) -> list[str]:
    return [step.label for step in layout.steps]


def hooks(model: nn.Module) -> dict[str, int]:
    """Every module's count of registered forward hooks of any flavour, by module path."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return {path: sum(len(getattr(module, kind)) for kind in kinds) for path, module in model.named_modules()}


def test_pre_ln_normalises_a_copy_of_the_stream_before_each_sublayer(tokenizer):
    layout = layer_layout(tiny(tokenizer, "pre-ln"))
    assert layout.architecture == "pre-ln"
    assert labels(layout) == PRE_LN_ORDER
    # Each skip leaves the stream before the LayerNorm, so the LayerNorm sits on the branch.
    assert layout.residual_spans == ((0, 2), (3, 5))
    assert [step.module for step in layout.steps if step.kind == "layernorm"] == [
        "attention.LayerNorm",
        "intermediate.LayerNorm",
    ]
    assert layout.final_layernorm


def test_post_ln_normalises_the_stream_after_each_residual_add(tokenizer):
    layout = layer_layout(tiny(tokenizer, "post-ln"))
    assert layout.architecture == "post-ln"
    assert labels(layout) == POST_LN_ORDER
    # Each skip re-joins before the LayerNorm, so the LayerNorm sits on the stream itself.
    assert layout.residual_spans == ((0, 1), (3, 4))
    assert [step.module for step in layout.steps if step.kind == "layernorm"] == [
        "attention.output.LayerNorm",
        "output.LayerNorm",
    ]
    assert not layout.final_layernorm


@pytest.mark.parametrize("task", ["classification", "qa"])
@pytest.mark.parametrize("architecture, order", [("pre-ln", PRE_LN_ORDER), ("post-ln", POST_LN_ORDER)])
def test_the_head_does_not_change_the_layer(tokenizer, architecture, order, task):
    layout = layer_layout(tiny(tokenizer, architecture, task))
    assert (layout.architecture, labels(layout)) == (architecture, order)


def test_a_bare_encoder_with_pooler_is_read_too(tokenizer):
    config = synthetic.build_config("pre-ln", len(tokenizer), **TINY_LAYER)
    model = RobertaPreLayerNormModel(config).eval()  # task "base": the body is the model, pooler included
    layout = layer_layout(LoadedModel("base", "local", "pre-ln", "base", model, tokenizer))
    assert labels(layout) == PRE_LN_ORDER and layout.final_layernorm


def test_hooks_are_removed_and_training_mode_restored(tokenizer):
    loaded = tiny(tokenizer, "post-ln")
    loaded.model.train()  # dropout on: the probe must switch it off, then leave the model as it found it
    before = hooks(loaded.model)
    layer_layout(loaded)
    assert hooks(loaded.model) == before
    assert not any(before.values())
    assert loaded.model.training and loaded.body.encoder.layer[0].training


def test_the_layout_comes_from_the_data_flow_not_the_config(tokenizer):
    loaded = tiny(tokenizer, "post-ln")  # a RobertaModel, config model_type "roberta"...
    pre_config = synthetic.build_config("pre-ln", len(tokenizer), **TINY_LAYER)
    loaded.body.encoder.layer[0] = RobertaPreLayerNormLayer(pre_config, layer_idx=0).eval()  # ...with a pre-LN layer 0
    layout = layer_layout(loaded)
    assert layout.architecture == "pre-ln" and labels(layout) == PRE_LN_ORDER
    assert not layout.final_layernorm  # the body around it is still post-LN


def test_a_layer_that_is_neither_pattern_is_refused(tokenizer):
    loaded = tiny(tokenizer, "post-ln")
    loaded.body.encoder.layer[0].output.LayerNorm = nn.Identity()  # one LayerNorm short of post-LN
    before = hooks(loaded.model)
    with pytest.raises(RplnError, match="neither pre-LN nor post-LN"):
        layer_layout(loaded)
    assert hooks(loaded.model) == before


@pytest.mark.parametrize("architecture", ["pre-ln", "post-ln"])
def test_the_diagram_draws_the_layout(tokenizer, architecture):
    layout = layer_layout(tiny(tokenizer, architecture))
    fig = layer_diagram(layout)
    shapes = [shape.name for shape in fig.layout.shapes]
    assert shapes.count("layernorm") == 2  # the layer's own LayerNorms
    assert shapes.count("ln_final") == int(layout.final_layernorm)  # drawn apart: not part of the layer
    assert shapes.count("add") == 2
    residual = [trace for trace in fig.data if trace.legendgroup == "residual"]
    assert len(residual) == len(layout.residual_spans)
    for trace, (start, join) in zip(residual, layout.residual_spans):
        # Rows: 0 is the layer input, step i sits on row i + 1; the path leaves below step `start`
        # and ends on the "+" node of step `join`.
        assert trace.y[0] == start + 0.5 and trace.y[-1] == join + 1
        assert trace.line.width >= 4
    assert fig.layout.height == 420
    assert not fig.layout.xaxis.visible and not fig.layout.yaxis.visible
    assert architecture in fig.layout.title.text


def test_the_diagram_takes_a_title():
    layout = LayerLayout("post-ln", (), (), False, "")
    assert layer_diagram(layout, title="Post-LN").layout.title.text == "Post-LN"
