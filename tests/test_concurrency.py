"""Passes on one loaded model from many threads give exactly what they give one at a time.

Capture and ablation hooks sit on the shared modules, so without the model's lock a pass running meanwhile fires
another request's hooks (the app saw shape errors and, beside an ablation, silently wrong scores). The engine, not
the app's queue, must guarantee this: Gradio's direct run route and cancelled jobs bypass the queue.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rpln_core import answer, classify, fill_mask
from rpln_core.ablation import layernorm_dims_off, outlier_ablation
from rpln_core.architecture import layer_layout

TEXTS = [
    "the cat sat on the <mask> .",
    "a <mask> of " + "words and " * 12 + "more .",
    "<mask> is here and <mask> is there .",
]


def fingerprint(result) -> tuple:
    """Everything a request returns that a stray hook could change: scores, attentions, streams, LayerNorm stats."""
    trace = result.trace
    parts = [trace.attentions.float(), trace.resid_post.float(), trace.resid_pre_norm, trace.attn_out_norm]
    parts += [stats.scale for stats in trace.layernorms] + [stats.abs_mean_per_dim for stats in trace.layernorms]
    if trace.logit_lens is not None:
        parts.append(trace.logit_lens.top_probs)
    if getattr(result, "probabilities", None) is not None:
        parts.append(result.probabilities)
    return tuple(part.clone() for part in parts)


def identical(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def run_in_threads(jobs, workers: int = 6):
    with ThreadPoolExecutor(workers) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]


@pytest.mark.parametrize("architecture", ["pre-ln", "post-ln"])
def test_concurrent_fill_masks_equal_sequential_ones_bit_for_bit(loaded, architecture):
    model = loaded(architecture, "mlm")
    sequential = [fingerprint(fill_mask(model, text)) for text in TEXTS]
    jobs = [lambda text=text: fingerprint(fill_mask(model, text)) for text in TEXTS * 6]
    concurrent = run_in_threads(jobs)
    assert all(identical(got, sequential[i % len(TEXTS)]) for i, got in enumerate(concurrent))


def test_an_ablation_running_meanwhile_changes_no_other_request(loaded):
    model = loaded("pre-ln", "mlm")
    text = TEXTS[0]
    expected = fingerprint(fill_mask(model, text))
    ablated_alone = outlier_ablation(model, text, dims=[1, 2], controls=2, seed=3).to_dict()
    jobs = [lambda: fingerprint(fill_mask(model, text)) for _ in range(12)]
    jobs += [lambda: outlier_ablation(model, text, dims=[1, 2], controls=2, seed=3).to_dict() for _ in range(4)]
    results = run_in_threads(jobs)
    assert all(identical(got, expected) for got in results[:12])
    assert all(got == ablated_alone for got in results[12:])


def test_the_dims_off_block_holds_the_model_until_it_ends(loaded):
    model = loaded("pre-ln", "mlm")
    intact = fingerprint(fill_mask(model, TEXTS[0]))
    other: list[tuple] = []
    with layernorm_dims_off(model, [0, 1, 2, 3]):
        worker = threading.Thread(target=lambda: other.append(fingerprint(fill_mask(model, TEXTS[0]))))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive(), "another thread's pass ran while the dimensions were switched off"
    worker.join()
    assert identical(other[0], intact)


def test_other_tasks_and_the_layout_probe_are_safe_beside_captures(loaded):
    qa, classifier = loaded("pre-ln", "qa"), loaded("post-ln", "classification")
    context = "the cat sat on the mat . " * 10
    expected_answer = answer(qa, "where is the cat ?", context, top_k=3, max_seq_len=32, doc_stride=8)
    expected_labels = classify(classifier, "a fine film").to_pipeline()
    jobs = []
    for _ in range(5):
        jobs.append(lambda: answer(qa, "where is the cat ?", context, top_k=3, max_seq_len=32, doc_stride=8))
        jobs.append(lambda: classify(classifier, "a fine film").to_pipeline())
        jobs.append(lambda: layer_layout(qa).architecture)
    results = run_in_threads(jobs)
    for index in range(0, len(results), 3):
        got_answer, got_labels, got_layout = results[index : index + 3]
        assert got_answer.answers == expected_answer.answers
        assert identical(fingerprint(got_answer), fingerprint(expected_answer))
        assert got_labels == expected_labels
        assert got_layout == "pre-ln"



def test_the_new_heads_tasks_in_threads_equal_them_one_at_a_time(loaded):
    """Token tagging, multiple choice and generation (streamed step by step, the lock taken per step) beside each
    other and beside fill-mask captures on another model."""
    from rpln_core import choose, generate, tag

    tagger, chooser = loaded("pre-ln", "token-classification"), loaded("post-ln", "multiple-choice")
    writer, filler = loaded("pre-ln", "causal-lm"), loaded("pre-ln", "mlm")

    def tagged():
        result = tag(tagger, "the cat sat on the mat .")
        return fingerprint(result) + (result.token_scores,)

    def chosen():  # every choice's pass
        result = choose(chooser, "the cat", ["sat .", "ran away ."])
        return tuple(part for trace in result.traces for part in fingerprint(SimpleNamespace(trace=trace)))

    calls = [tagged, chosen, lambda: fingerprint(generate(writer, "the cat", max_new_tokens=6, do_sample=True, seed=3)),
             lambda: fingerprint(fill_mask(filler, TEXTS[1]))]
    sequential = [call() for call in calls]
    concurrent = run_in_threads(calls * 4)
    for i, got in enumerate(concurrent):
        assert identical(got, sequential[i % len(calls)]), f"call {i % len(calls)} differs when run beside the others"
