"""Models built in several threads at once come out as they do one at a time (rpln_core.building)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from rpln_core.load import load_model, random_model


def test_loads_and_random_models_in_parallel_threads_equal_the_same_built_alone(tokenizer):
    def build(job):
        kind, name = job
        if kind == "load":
            return load_model(name).model.state_dict()
        return random_model("pre-ln", "mlm", tokenizer, seed=name).model.state_dict()

    jobs = [("load", "preln-mini"), ("load", "postln-mini"), ("random", 1), ("load", "preln-mini-qa"), ("random", 2)]
    alone = [build(job) for job in jobs]
    for _ in range(3):
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(build, jobs))
        for one, other in zip(alone, together):
            assert one.keys() == other.keys()
            assert all(torch.equal(one[key], other[key]) for key in one)
