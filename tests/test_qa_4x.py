"""answer() against the real transformers 4.57.6 pipeline("question-answering").

scripts/qa_reference_4x.py ran 4.x's pipeline over these cases on the same checkpoint directories (a tiny random
model committed under tests/data/qa_4x/tiny-qa, and the bundled preln-mini-qa) and stored what it returned. With
default keywords, answer() must give the same answers at the same character positions, scores equal to 1e-5
relative, from as many windows; where 4.x raised, answer() must refuse with a message naming the keyword at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rpln_core.errors import RplnError
from rpln_core.load import load_model
from rpln_core.tasks.qa import answer

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((ROOT / "tests" / "data" / "qa_4x" / "reference.json").read_text(encoding="utf-8"))
ANSWERED = [case for case in REFERENCE["cases"] if "answers" in case["expected"]]
FAILED = [case for case in REFERENCE["cases"] if "error" in case["expected"]]


@pytest.fixture(scope="module")
def model():
    """Return a function: a reference case's model path -> that checkpoint, loaded once by our loader."""
    cache = {}

    def get(path: str):
        if path not in cache:
            cache[path] = load_model(str(ROOT / path))
        return cache[path]

    return get


def test_the_reference_was_made_by_transformers_4_57_6_on_both_models():
    assert REFERENCE["versions"]["transformers"] == "4.57.6"
    assert {case["model"] for case in ANSWERED} == {"tests/data/qa_4x/tiny-qa", "models/preln-mini-qa"}
    assert {case["id"] for case in REFERENCE["cases"]} == {case["id"] for case in ANSWERED + FAILED}


@pytest.mark.parametrize("case", ANSWERED, ids=[case["id"] for case in ANSWERED])
def test_answers_positions_and_scores_are_those_of_4x(model, case):
    result = answer(model(case["model"]), case["question"], case["context"], **case["kwargs"])
    expected = case["expected"]["answers"]
    assert [(a.answer, a.start, a.end) for a in result.answers] == [(e["answer"], e["start"], e["end"]) for e in
                                                                    expected]
    assert [a.score for a in result.answers] == pytest.approx([e["score"] for e in expected], rel=1e-5)
    assert result.windows == case["expected"]["windows"]
    assert isinstance(result.to_pipeline(), dict) == (len(expected) == 1)  # 4.x: a dict for one answer, else a list


@pytest.mark.parametrize("case", FAILED, ids=[case["id"] for case in FAILED])
def test_where_4x_failed_answer_refuses_naming_a_keyword_it_was_given(model, case):
    with pytest.raises(RplnError) as refusal:
        answer(model(case["model"]), case["question"], case["context"], **case["kwargs"])
    assert any(f"{keyword}=" in refusal.value.message for keyword in case["kwargs"]), refusal.value.message
