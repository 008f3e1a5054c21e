"""generate continues a prompt as transformers' generate does (given RoBERTa's positions), and traces the result."""

import json
import shutil

import pytest
import torch

from rpln_core import RplnError, budgets, fill_mask, generate, generate_steps, load_model, result_frame
from rpln_core.tasks.generate import roberta_positions

ARCHS = ["pre-ln", "post-ln"]
PROMPT = "The cat sat on"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prompt_ids(model, prompt=PROMPT):
    """<s> and the prompt's tokens: what the model continues (no closing </s>)."""
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return torch.tensor([[model.tokenizer.bos_token_id] + ids])


def reference(model, ids, **kwargs):
    """transformers' own generate, given the positions RoBERTa's forward gives (it numbers them from 0 otherwise)."""
    with torch.no_grad():
        out = model.model.generate(ids, position_ids=roberta_positions(ids, model.config.pad_token_id),
                                   pad_token_id=model.config.pad_token_id, **kwargs)
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_equals_transformers_generate(loaded, arch):
    model = loaded(arch, "causal-lm")
    result = generate(model, PROMPT, max_new_tokens=12)
    assert result.token_ids == reference(model, prompt_ids(model), do_sample=False, max_new_tokens=12)
    assert result.stopped_by == "max_new_tokens" and len(result.steps) == 12
    assert result.trace.tokens.ids == prompt_ids(model)[0].tolist() + result.token_ids
    assert result.text == model.tokenizer.decode(result.token_ids, skip_special_tokens=True)


@pytest.mark.parametrize(
    "settings", [dict(), dict(temperature=0.7, top_k=20, top_p=0.9), dict(top_k=0, top_p=0.5), dict(temperature=2.0)]
)
def test_seeded_sampling_draws_what_transformers_generate_draws_under_the_same_torch_seed(loaded, settings):
    model = loaded("pre-ln", "causal-lm")
    for seed in (0, 1, 2):
        ours = generate(model, PROMPT, max_new_tokens=10, do_sample=True, seed=seed, **settings).token_ids
        torch.manual_seed(seed)
        assert ours == reference(model, prompt_ids(model), do_sample=True, max_new_tokens=10, **settings)


def test_the_same_seed_gives_the_same_text_and_seeds_differ(loaded):
    model = loaded("pre-ln", "causal-lm")
    sample = lambda seed: generate(model, PROMPT, max_new_tokens=10, do_sample=True, seed=seed).token_ids  # noqa: E731
    assert sample(3) == sample(3)
    assert len({tuple(sample(seed)) for seed in range(5)}) > 1


def test_transformers_generate_alone_numbers_robertas_positions_from_zero(loaded):
    """Why the references pass position_ids: RoBERTa's forward numbers positions from pad_token_id + 1 (2), as in
    training; transformers 5's generate passes its own, from 0. generate here uses the forward's numbering."""
    model = loaded("pre-ln", "causal-lm")
    seen = []
    hook = model.body.embeddings.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(kwargs.get("position_ids")), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model.model.generate(prompt_ids(model), do_sample=False, max_new_tokens=1, pad_token_id=1)
        generate(model, PROMPT, max_new_tokens=1)
    finally:
        hook.remove()
    length = prompt_ids(model).shape[1]
    assert seen[0][0].tolist() == list(range(length))  # transformers' generate
    assert seen[1][0].tolist() == list(range(2, 2 + length))  # ours


def test_the_trace_is_causal_and_its_logit_lens_follows_each_generated_token(loaded):
    model = loaded("pre-ln", "causal-lm")
    result = generate(model, PROMPT, max_new_tokens=8)
    trace = result.trace
    tokens = len(trace.tokens)
    assert trace.attentions.shape == (model.num_layers, model.config.num_attention_heads, tokens, tokens)
    above_diagonal = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)
    assert torch.all(trace.attentions[..., above_diagonal] == 0)
    assert torch.all(trace.attentions[..., ~above_diagonal].float().sum(-1) > 0)
    lens = trace.logit_lens
    assert lens.positions == [step.position - 1 for step in result.steps]
    assert lens.top_ids.shape[:2] == (model.num_layers + 1, len(result.steps))
    assert lens.top_ids[-1, :, 0].tolist() == result.token_ids  # greedy: the last layer's best is what was chosen


def test_each_steps_candidates_are_the_models_next_token_distribution(loaded):
    model = loaded("post-ln", "causal-lm")
    result = generate(model, PROMPT, max_new_tokens=6, do_sample=True, seed=4, candidates=4)
    ids = torch.tensor([result.trace.tokens.ids])
    with torch.no_grad():
        probs = model.model(ids).logits[0].softmax(-1)  # one pass over the whole sequence
    for step in result.steps:
        expected = probs[step.position - 1]
        top = expected.topk(4)
        assert [c.token for c in step.candidates] == top.indices.tolist()
        assert [c.probability for c in step.candidates] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert step.probability == pytest.approx(expected[step.token].item(), abs=1e-5)


def test_generation_stops_at_the_end_of_text_token(loaded, checkpoint_dir, tmp_path):
    shutil.copytree(checkpoint_dir("pre-ln", "causal-lm"), tmp_path / "eager-to-stop")
    model = load_model(str(tmp_path / "eager-to-stop"))
    eos = model.tokenizer.eos_token_id
    with torch.no_grad():
        model.model.lm_head.bias[eos] += 8.0  # </s> wins after a few tokens, not at once
    result = generate(model, PROMPT, max_new_tokens=30)
    assert result.stopped_by == "eos" and result.token_ids[-1] == eos and len(result.token_ids) < 30
    assert result.token_ids == reference(model, prompt_ids(model), do_sample=False, max_new_tokens=30)
    assert result.trace.tokens.strings[-1] == "</s>" and result.trace.tokens.special[-1]


def test_streaming_steps_then_the_result_gives_what_generate_gives(loaded):
    model = loaded("pre-ln", "causal-lm")
    run = generate_steps(model, PROMPT, max_new_tokens=7, do_sample=True, seed=9)
    streamed = []
    for step in run:
        streamed.append(step.token)
        assert step.text == model.tokenizer.decode(streamed, skip_special_tokens=True)
    result = run.result()
    assert streamed == result.token_ids == generate(model, PROMPT, max_new_tokens=7, do_sample=True, seed=9).token_ids
    length = len(result.trace.tokens)
    assert [step.position for step in result.steps] == list(range(length - 7, length))


def test_runs_read_step_by_step_in_turn_keep_their_own_cache_and_random_state(loaded):
    model = loaded("pre-ln", "causal-lm")
    settings = dict(max_new_tokens=6, do_sample=True)
    first = generate_steps(model, PROMPT, seed=1, **settings)
    second = generate_steps(model, "Paris is", seed=2, **settings)
    interleaved = [(a.token, b.token) for a, b in zip(first, second)]
    assert [a for a, _ in interleaved] == generate(model, PROMPT, seed=1, **settings).token_ids
    assert [b for _, b in interleaved] == generate(model, "Paris is", seed=2, **settings).token_ids


def test_a_prompt_near_the_models_last_position_stops_there_with_a_notice(loaded):
    model = loaded("pre-ln", "causal-lm")  # reads at most 64 tokens
    prompt = "cat " * 60
    length = prompt_ids(model, prompt).shape[1]
    result = generate(model, prompt, max_new_tokens=20)
    assert result.stopped_by == "model limit" and len(result.trace.tokens) == 64 == length + len(result.token_ids)
    assert any("last position" in notice for notice in result.notices)
    last_room = " ".join(["cat"] * 61)  # <s> and 62 tokens ("cat" is two, " cat" one): room for one more
    assert prompt_ids(model, last_room).shape[1] == 63
    assert len(generate(model, last_room, max_new_tokens=5).token_ids) == 1
    with pytest.raises(RplnError, match="prompt is 64 tokens long; this model reads at most 64.*no room"):
        generate(model, last_room + " cat", max_new_tokens=1)


def test_the_result_frame_lists_each_steps_candidates(loaded):
    result = generate(loaded("pre-ln", "causal-lm"), PROMPT, max_new_tokens=3, candidates=2)
    frame = result_frame(result)
    assert len(frame) == 3 * 2
    assert frame.groupby("step")["generated"].first().tolist() == [step.token_str for step in result.steps]
    assert frame["probability"].tolist() == [c.probability for step in result.steps for c in step.candidates]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=65), "max_new_tokens must be a whole number from 1 to 64"),
        (dict(max_new_tokens=0), "max_new_tokens must be a whole number from 1 to 64"),
        (dict(do_sample="yes"), "do_sample must be True or False"),
        (dict(temperature=0), "temperature must be a number above 0"),
        (dict(temperature=float("nan")), "temperature must be a number above 0"),
        (dict(top_p=0.0), "top_p must be a number above 0 and at most 1"),
        (dict(top_p=1.5), "top_p must be a number above 0 and at most 1"),
        (dict(top_k=-1), "top_k must be a whole number from 0"),
        (dict(seed=-1), "seed must be a whole number from 0"),
        (dict(candidates=0), "candidates must be a whole number from 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(loaded, kwargs, message):
    with pytest.raises(RplnError, match=message):
        generate(loaded("pre-ln", "causal-lm"), PROMPT, **kwargs)


def test_max_new_tokens_is_a_budget(loaded):
    saved = budgets.current()
    try:
        budgets.configure(max_new_tokens=3)
        with pytest.raises(RplnError, match="from 1 to 3"):
            generate(loaded("pre-ln", "causal-lm"), PROMPT, max_new_tokens=4)
    finally:
        budgets.configure(**{name: getattr(saved, name) for name in saved.__dataclass_fields__})


def test_an_empty_prompt_and_a_masked_lm_are_refused(loaded):
    with pytest.raises(RplnError, match="prompt is empty"):
        generate(loaded("pre-ln", "causal-lm"), " ")
    with pytest.raises(RplnError, match="no text generation head.*run it with fill_mask"):
        generate(loaded("pre-ln", "mlm"), PROMPT)
    with pytest.raises(RplnError, match="no fill-mask head.*run it with generate"):
        fill_mask(loaded("pre-ln", "causal-lm"), "The <mask> sat.")


def test_a_causal_lm_whose_config_does_not_say_decoder_loads_as_one_with_a_notice(checkpoint_dir, tmp_path):
    shutil.copytree(checkpoint_dir("post-ln", "causal-lm"), tmp_path / "undeclared")
    config_file = tmp_path / "undeclared" / "config.json"
    config = json.loads(config_file.read_text())
    assert config.pop("is_decoder") is True
    config_file.write_text(json.dumps(config))
    as_transformers_builds_it = type(load_model(str(checkpoint_dir("post-ln", "causal-lm"))).model)
    assert not as_transformers_builds_it.from_pretrained(tmp_path / "undeclared").config.is_decoder
    model = load_model(str(tmp_path / "undeclared"))
    assert model.config.is_decoder
    result = generate(model, PROMPT, max_new_tokens=4)
    assert any("does not set is_decoder=true" in notice for notice in result.notices)
    declared = load_model(str(checkpoint_dir("post-ln", "causal-lm")))
    assert declared.notices == () and result.token_ids == generate(declared, PROMPT, max_new_tokens=4).token_ids
