"""Reference answers from transformers 4.57.6's question-answering pipeline, for tests/test_qa_4x.py.

transformers 5 removed `QuestionAnsweringPipeline`; `rpln_core.tasks.qa.answer` reproduces it. This script asks the
real 4.x pipeline, so that the tests compare with what it returned rather than with our reading of its code:

1. builds the tiny QA checkpoint `tests/data/qa_4x/tiny-qa/` when it is missing (or with `--rebuild-model`),
2. makes a throwaway venv (`data/qa4x-venv`, ignored by git) holding transformers 4.57.6 and the versions of
   tokenizers, huggingface-hub and torch it accepts,
3. runs this same file inside that venv (`--child`), where `pipeline("question-answering")` answers every case of
   CASES with the same checkpoint directories (same weights, same tokenizer.json) that the tests load, and
4. writes `tests/data/qa_4x/reference.json`: per case the model, question, context, keywords and 4.x's answers
   (or the error 4.x raised), plus the versions used.

CI never runs it; the tests only read the committed JSON. Run from the repository root:
`.venv/bin/python scripts/qa_reference_4x.py` (about a minute; pip needs PyPI or a local wheel of torch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "data" / "qa_4x"
REFERENCE = OUT_DIR / "reference.json"
TINY = "tests/data/qa_4x/tiny-qa"
MINI = "models/preln-mini-qa"
DEFAULT_VENV = ROOT / "data" / "qa4x-venv"

# The newest releases 4.57.6 accepts (tokenizers<=0.23.0 and huggingface-hub<1.0 in its dependency table; tokenizers
# 0.23.0 itself was never published), with torch and numpy as in the project so only transformers' code differs.
PINS = [
    "transformers==4.57.6",
    "tokenizers==0.22.2",
    "huggingface-hub==0.36.2",
    "torch==2.13.0",
    "numpy==2.4.6",
    "safetensors==0.8.0",
]

# The tiny model: 64 tokens per window, so contexts of a few sentences already need several windows.
TINY_MAX_TOKENS = 64
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "initializer_range": 0.2}
# Start/end logits of about unit spread: the best answer takes a few per cent, not 99%, so top_k lists, sums of
# equal texts and the null answer all carry real weight (a peaked model would test only the argmax).
TINY_QA_SCALE = 2.0

STORY = (
    "The king wrote the letter in 1790, and the queen read it aloud in Paris. Paris is the capital of France, "
    "and Berlin is the capital of Germany. The cat sat on the mat and looked at the dog. A good movie makes you "
    "laugh, a bad movie makes you leave. The president spoke to the nation about the economy and the war. "
    "Numbers like 42, 1776 and 3.14 appear in text too! In the beginning God created the heaven and the earth."
)
CASE_TEXT = "Paris is big. paris is old. PARIS is far, and Paris! is near."
WHITESPACE = "He went to  Paris\tand\n\nparis  again.\n  The  end\t\t."
NON_ASCII = "Émile went to Zürich — 東京 and Straße 😀👍🏽 café, naïve résumé; مرحبا بالعالم."
LONG_QUESTION = "Who wrote the letter to the queen about the war, the economy and the capital of France in 1790?"

DEFINITIONS = [
    "harp: a chordal stringed instrument.",
    "violin: bowed stringed instrument that is the highest member of the violin family.",
    "piano: a keyboard instrument that is played by depressing keys that cause hammers to strike tuned strings.",
    "oboe: a slender double-reed instrument with a conical bore.",
    "drum: a musical percussion instrument; usually consists of a hollow cylinder with a membrane stretched over it.",
    "trumpet: a brass instrument with a flared bell and a valve mechanism.",
    "cello: a large stringed instrument; seated player holds it upright while playing.",
    "flute: a high-pitched woodwind instrument; a slender tube closed at one end with finger holes.",
    "guitar: a stringed instrument usually having six strings; played by strumming or plucking.",
    "tuba: the largest and lowest member of the brass family.",
    "clarinet: a single-reed instrument with a straight tube.",
    "banjo: a stringed instrument of the guitar family with a long neck and a circular body.",
]
README_CONTEXT = (
    "harp: a chordal stringed instrument. violin: bowed stringed instrument that is the highest member "
    "of the violin family."
)
MANY_DEFINITIONS = " ".join(DEFINITIONS)
SPACED_DEFINITIONS = "harp:  a chordal stringed instrument.\n\nviolin:\tbowed stringed instrument  that is the " \
    "highest member of the violin family.\n  oboe: a slender double-reed instrument."
REPEATED_DEFINITIONS = (
    "violin: a bowed stringed instrument. fiddle: a bowed stringed instrument. "
    "VIOLIN: A BOWED STRINGED INSTRUMENT. harp: a chordal stringed instrument."
)
ACCENTED_DEFINITIONS = (
    "café: a small restaurant where drinks and snacks are sold. naïveté: lack of sophistication or worldliness. "
    "résumé: a short account of your career and qualifications. Zürich: the largest city in Switzerland."
)


def case(model: str, name: str, question: str, context: str, covers: str, **kwargs) -> dict:
    """One reference case: what to ask 4.x, and the behaviour it pins down."""
    return {"id": f"{'tiny' if model == TINY else 'mini'}-{name}", "model": model, "question": question,
            "context": context, "kwargs": kwargs, "covers": covers}


CASES = [
    # ---- the tiny model: random weights, so every rule shows, not just the argmax of a confident model
    case(TINY, "one-window", "Who wrote the letter?", "The king wrote the letter in 1790. Paris is in France.",
         "defaults, one window"),
    case(TINY, "windows-default", "Who wrote the letter?", STORY,
         "several windows; max_seq_len from the tokenizer (64), doc_stride not given: min(64 // 2, 128)"),
    case(TINY, "windows-top3", "Who wrote the letter?", STORY, "top_k=3 over several windows", top_k=3),
    case(TINY, "windows-top-large", "Who wrote the letter?", STORY, "top_k large: sums over many candidates",
         top_k=60),
    case(TINY, "stride-given-small", "Who wrote the letter?", STORY, "explicit small doc_stride and max_seq_len",
         max_seq_len=40, doc_stride=8, top_k=5),
    case(TINY, "stride-given-over-half", "Who wrote the letter?", STORY,
         "explicit doc_stride above half a window is used as given", max_seq_len=48, doc_stride=30, top_k=3),
    case(TINY, "max-seq-len-24", "Who wrote the letter?", STORY, "small max_seq_len, stride defaults to 12",
         max_seq_len=24, top_k=3),
    case(TINY, "max-answer-len-2", "Who wrote the letter?", STORY, "max_answer_len=2", max_answer_len=2, top_k=5),
    case(TINY, "max-answer-len-1", "Where is Paris?", CASE_TEXT, "max_answer_len=1", max_answer_len=1, top_k=4),
    case(TINY, "long-question", LONG_QUESTION, STORY,
         "a question longer than max_question_len (the fast path ignores max_question_len)",
         max_question_len=4, top_k=3),
    case(TINY, "impossible-top1", "Who wrote the letter?", "The king wrote the letter in 1790.",
         "handle_impossible_answer, top_k=1", handle_impossible_answer=True),
    case(TINY, "impossible-windows", "Who wrote the letter?", STORY,
         "handle_impossible_answer over several windows: the null score is the minimum over windows",
         handle_impossible_answer=True, top_k=5),
    case(TINY, "no-align-top1", "Who wrote the letter?", STORY, "align_to_words=False, top_k=1 (argmax path)",
         align_to_words=False),
    case(TINY, "no-align-top5", "Who wrote the letter?", STORY, "align_to_words=False over several windows",
         align_to_words=False, top_k=5),
    case(TINY, "repeated-case", "Where is Paris?", CASE_TEXT, "equal texts in different case are summed",
         top_k=10),
    case(TINY, "one-word", "Why?", "Freedom.", "one-word context", top_k=1),
    case(TINY, "one-word-top5", "Why?", "Freedom.", "one-word context, more answers asked than spans exist",
         top_k=5),
    case(TINY, "one-word-no-align", "Why?", "Freedom.", "one-word context without word alignment",
         top_k=8, align_to_words=False),
    case(TINY, "one-word-impossible", "Is it?", "Yes", "bare one-token context with the null answer", top_k=3,
         handle_impossible_answer=True),
    case(TINY, "whitespace", "Where did he go?", WHITESPACE, "double spaces, tabs and newlines in the context",
         top_k=12),
    case(TINY, "whitespace-no-align", "Where did he go?", WHITESPACE, "whitespace runs without word alignment",
         top_k=12, align_to_words=False),
    case(TINY, "non-ascii", "Where did Émile go?", NON_ASCII, "accents, CJK, emoji, RTL", top_k=8),
    case(TINY, "edge-spaces", "Who sat?", "   The cat sat.   ", "leading and trailing spaces", top_k=5),
    case(TINY, "error-stride-over-seq-len", "Who wrote the letter?", STORY, "4.x refuses doc_stride > max_seq_len",
         max_seq_len=32, doc_stride=40),
    case(TINY, "error-stride-fills-window", "Who wrote the letter?", STORY,
         "4.x's tokenizer panics when the stride leaves no room to advance", max_seq_len=32, doc_stride=24),
    case(TINY, "stride-fills-window-one-window", "Who wrote the letter?", "The king wrote the letter.",
         "a doc_stride no window could advance by is harmless when the context fits in one window",
         max_seq_len=32, doc_stride=30, top_k=2),
    case(TINY, "error-question-fills-window", LONG_QUESTION, STORY, "a question that leaves no room for context",
         max_seq_len=16),
    # ---- the bundled model: trained, so the answers are the ones a user sees
    case(MINI, "readme", "What is a violin?", README_CONTEXT, "the README's example", top_k=3),
    case(MINI, "windows-default", "What is a cello?", MANY_DEFINITIONS, "several windows with the defaults"),
    case(MINI, "windows-top3", "What is a tuba?", MANY_DEFINITIONS, "top_k=3 over several windows", top_k=3),
    case(MINI, "windows-top-large", "What is a banjo?", MANY_DEFINITIONS, "top_k large", top_k=40),
    case(MINI, "stride-100", "What is a cello?", MANY_DEFINITIONS,
         "doc_stride=100 with max_seq_len 128: used as given (4.x caps only the default)", doc_stride=100, top_k=3),
    case(MINI, "stride-given-small", "What is a drum?", MANY_DEFINITIONS, "explicit small stride and window",
         max_seq_len=64, doc_stride=16, top_k=3),
    case(MINI, "max-seq-len-48", "What is a flute?", MANY_DEFINITIONS, "max_seq_len=48", max_seq_len=48, top_k=2),
    case(MINI, "max-answer-len-4", "What is a piano?", MANY_DEFINITIONS, "max_answer_len=4", max_answer_len=4,
         top_k=3),
    case(MINI, "long-question", "What does it mean, in music and in the orchestra, to play the oboe?",
         MANY_DEFINITIONS, "question longer than max_question_len", max_question_len=5, top_k=2),
    case(MINI, "impossible", "What is a sitar?", README_CONTEXT, "the asked word is absent, null answer allowed",
         handle_impossible_answer=True, top_k=3),
    case(MINI, "impossible-windows", "What is a sitar?", MANY_DEFINITIONS, "null answer over several windows",
         handle_impossible_answer=True, top_k=2),
    case(MINI, "no-align", "What is a violin?", README_CONTEXT, "align_to_words=False", align_to_words=False,
         top_k=3),
    case(MINI, "repeated-case", "What is a violin?", REPEATED_DEFINITIONS, "equal answers in different case",
         top_k=5),
    case(MINI, "one-word", "Why?", "Freedom.", "one-word context", top_k=3),
    case(MINI, "whitespace", "What is a violin?", SPACED_DEFINITIONS, "whitespace runs", top_k=5),
    case(MINI, "non-ascii", "What is a résumé?", ACCENTED_DEFINITIONS, "accented words", top_k=3),
]


# ---------------------------------------------------------------- parent: the project venv (transformers 5)


def build_tiny_model(directory: Path) -> None:
    """Save a tiny RobertaPreLayerNormForQuestionAnswering (safetensors) with its tokenizer in `directory`."""
    import torch

    from rpln_core import synthetic

    texts = synthetic.SAMPLE_TEXT + [STORY, CASE_TEXT, WHITESPACE, NON_ASCII, LONG_QUESTION]
    tokenizer = synthetic.build_tokenizer(texts, vocab_size=400)
    # 4.x takes max_seq_len from the tokenizer (min(model_max_length, 384)): make it the model's real limit.
    tokenizer.model_max_length = TINY_MAX_TOKENS
    config = synthetic.build_config(
        "pre-ln", len(tokenizer), max_position_embeddings=TINY_MAX_TOKENS + 2, **TINY_CONFIG
    )
    model = synthetic.build_model("pre-ln", "qa", config, seed=0)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, TINY_QA_SCALE / config.hidden_size**0.5)
        model.qa_outputs.bias.zero_()
    synthetic.save_checkpoint(model, tokenizer, directory)


def make_venv(directory: Path) -> Path:
    """A venv with transformers 4.57.6 (created once, reused); returns its python."""
    python = directory / "bin" / "python"
    if not python.exists():
        venv.create(directory, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    return python


def parent(args: argparse.Namespace) -> None:
    tiny = ROOT / TINY
    if args.rebuild_model or not (tiny / "model.safetensors").exists():
        build_tiny_model(tiny)
        print(f"built {tiny.relative_to(ROOT)}")
    python = make_venv(Path(args.venv))
    env = {**os.environ, "RUST_BACKTRACE": "0", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([str(python), str(Path(__file__).resolve()), "--child", str(REFERENCE)], check=True, cwd=ROOT,
                   env=env)
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    errors = sum("error" in c["expected"] for c in reference["cases"])
    print(f"wrote {REFERENCE.relative_to(ROOT)}: {len(reference['cases'])} cases, {errors} of them 4.x errors")


# ---------------------------------------------------------------- child: the throwaway venv (transformers 4.57.6)


def child(out: Path) -> None:
    import numpy
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    assert transformers.__version__ == "4.57.6", transformers.__version__
    torch.set_num_threads(1)  # the same sums in the same order on every run
    pipelines, models = {}, {}
    calls = [0]
    for path in sorted({c["model"] for c in CASES}):
        tokenizer = AutoTokenizer.from_pretrained(ROOT / path)
        model = AutoModelForQuestionAnswering.from_pretrained(ROOT / path)
        # One forward per window (the pipeline runs windows one by one): counting calls counts windows.
        model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        pipelines[path] = pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")
        models[path] = {
            "tokenizer_class": type(tokenizer).__name__,
            "model_max_length": tokenizer.model_max_length,
            "attn_implementation": model.config._attn_implementation,
            "dtype": str(model.dtype),
        }

    cases = []
    for c in CASES:
        calls[0] = 0
        try:
            output = pipelines[c["model"]](question=c["question"], context=c["context"], **c["kwargs"])
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 - the tokenizer's Rust panic is a BaseException only
            expected = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
        else:
            answers = output if isinstance(output, list) else [output]
            expected = {
                "windows": calls[0],
                "answers": [{k: a[k] for k in ("answer", "start", "end", "score")} for a in answers],
            }
        cases.append({**c, "expected": expected})

    reference = {
        "generated_by": "scripts/qa_reference_4x.py",
        "pipeline": 'transformers.pipeline("question-answering"), fast tokenizer, CPU',
        "versions": {
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        "models": models,
        "cases": cases,
    }
    out.write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="where to keep the transformers 4.57.6 venv")
    parser.add_argument("--rebuild-model", action="store_true", help="rebuild tests/data/qa_4x/tiny-qa")
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)  # set by the parent inside the venv
    args = parser.parse_args()
    if args.child:
        child(Path(args.child))
    else:
        sys.path.insert(0, str(ROOT))  # rpln_core, when run as a plain script
        parent(args)


if __name__ == "__main__":
    main()
