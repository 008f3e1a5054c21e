"""The README's examples run as printed, and what their comments claim is what they return."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "http://127.0.0.1:7860/"


def python_blocks(section: str) -> str:
    """Every ```python block of the README section headed `section`, joined into one script."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert blocks, f"no python example under '## {section}'"
    return "\n".join(blocks)


@pytest.fixture(scope="module")
def api_example():
    namespace: dict = {}
    exec(compile(python_blocks("Python API"), "README.md (Python API)", "exec"), namespace)
    return namespace


def test_fill_mask_example_predicts_what_its_comment_shows(api_example):
    predictions = api_example["result"].to_pipeline()
    assert [p["token_str"] for p in predictions[:2]] == [" LORD", " earth"]
    assert predictions[0]["token"] == 957 and predictions[0]["score"] == pytest.approx(0.137, abs=5e-4)


def test_classify_example_scores_as_its_comment_shows(api_example):
    labels = api_example["classify"](api_example["load_model"]("preln-mini-sentiment"),
                                     "A gripping, beautifully acted film.").to_pipeline()
    assert [label["label"] for label in labels] == ["positive", "negative"]
    assert labels[0]["score"] == pytest.approx(0.88, abs=5e-3)


def test_answer_example_returns_the_three_answers_its_comment_shows(api_example):
    answers = api_example["answers"]
    assert [a["answer"] for a in answers] == [
        "bowed stringed instrument that is the highest member of the violin family", "bowed", "family"]
    assert (answers[0]["start"], answers[0]["end"]) == (45, 118)
    assert answers[0]["score"] == pytest.approx(0.99996, abs=5e-5)
    assert [a["score"] for a in answers[1:]] == pytest.approx([5.6e-06, 5.1e-06], abs=5e-8)


def test_pandas_example_finds_the_heads_its_comment_names(api_example):
    frames, sinks = api_example["frames"], api_example["sinks"]
    residual = frames["residual"]
    by_layer = residual[residual["stream"] == "resid_post"].groupby("layer")["norm"].mean()
    assert by_layer.round(2).tolist() == pytest.approx([18.97, 22.68, 24.31, 27.87], abs=0.01)
    assert list(sinks.index) == [(0, 1), (0, 3)]
    assert sinks.round(3).tolist() == pytest.approx([0.265, 0.137], abs=1e-3)


def test_comparison_example_shows_pre_ln_growth_and_post_ln_none(api_example):
    summary = api_example["comparison_summary"](api_example["both"])
    left, right = summary["left"]["residual"], summary["right"]["residual"]
    assert left["norms"][:2] == pytest.approx([14.9, 18.7], abs=0.05)
    assert left["growth_factor"] == pytest.approx(1.16, abs=0.005)
    assert right["growth_factor"] == pytest.approx(1.00, abs=0.005)


def test_init_experiment_example_shrinks_with_depth(api_example):
    norms = api_example["run_init_experiment"](depth=12, width=256).sweep_last_layer_norms("pre-ln")
    assert norms == sorted(norms, reverse=True)


def test_random_model_example_stream_grows_from_8_9_to_12_8(api_example):
    norms = api_example["fill_mask"](api_example["tiny"], "The cat sat on the <mask>.").trace.resid_post_norm.mean(-1)
    assert norms[0].item() == pytest.approx(8.9, abs=0.05) and norms[-1].item() == pytest.approx(12.8, abs=0.05)
    assert (norms[1:] > norms[:-1]).all()


def test_ablation_example_switches_off_dims_128_and_225_and_the_top_turns_to_earth(api_example):
    busted = api_example["busted"]
    assert [run.condition for run in busted.runs][:3] == ["intact", "outlier dims off", "random dims off #1"]
    assert busted.run("outlier dims off").dims == [128, 225]
    assert [run.predictions[0][0] for run in busted.runs[:3]] == [" LORD", " earth", " LORD"]
    assert busted.run("outlier dims off").kl_from_intact[0] == pytest.approx(0.01, abs=0.005)


def test_client_example_runs_against_the_served_app(app_server):
    script = python_blocks("API from another program")
    assert README_URL in script  # the address the README tells users to run the app on
    namespace: dict = {}
    exec(compile(script.replace(README_URL, app_server.url), "README.md (client)", "exec"), namespace)
    assert set(namespace["out"]["predictions"][0]) == {"score", "token", "token_str", "sequence"}
    # the shortest call takes the page's defaults, as its comment says
    assert namespace["out"]["model"] == "preln-mini" and len(namespace["out"]["predictions"]) == 5
    assert "resid_pre_norm" in namespace["out"]["layers"][0]
    left, right = namespace["both"]["left"]["residual"], namespace["both"]["right"]["residual"]
    assert left["growth_factor"] == pytest.approx(1.16, abs=0.01) and right["growth_factor"] == pytest.approx(1.0, abs=0.01)
    assert [run["condition"] for run in namespace["busted"]["runs"]][:2] == ["intact", "outlier dims off"]
    assert len(namespace["busted"]["runs"]) == 5


def test_the_other_heads_examples_return_what_their_comments_show(api_example):
    assert [(e.word, e.label) for e in api_example["tags"].entities][:4] == [
        ("The", "DT"), ("Ġold", "JJ"), ("Ġman", "NN"), ("Ġwalked", "VBD")]
    picked = api_example["picked"]
    assert picked.choices[picked.best].choice == "the dividend of a fraction"
    story = api_example["story"]
    assert (story.text, story.stopped_by) == (" the world.", "eos")
    first = story.steps[0].candidates
    assert [c.token_str for c in first[:3]] == [" the", ",", "."] and first[0].probability == pytest.approx(0.11, abs=5e-3)
