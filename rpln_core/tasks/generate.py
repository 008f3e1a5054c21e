"""Text generation with a causal LM head: greedy or seeded sampling, each step's candidates, and the trace of the
whole sequence once it is done.

The model reads "<s> prompt" (RoBERTa's tokenizer would also end the prompt with </s>, which would tell the model
the text is over) and continues until </s>, `max_new_tokens` or the last position it has. Positions are numbered
as the model's own forward numbers them (from padding_idx + 1, as in training): transformers 5's `generate` numbers
them from 0 for RoBERTa, unless it is given `position_ids` (the tests show both).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor

from .. import budgets
from ..capture import CaptureOptions, Trace
from ..checks import MAX_SEED, check_flag, whole_number
from ..errors import RplnError
from ..load import LoadedModel
from ..tokens import Encoded, Tokens, check_text, encode, readable
from .common import captured_pass, first_tokens, one_call_at_a_time, require_head

MAX_TEMPERATURE = 100.0  # past this the distribution is flat to within float32 anyway


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen, with transformers' meanings: greedy (argmax) unless `do_sample`."""

    do_sample: bool = False
    temperature: float = 1.0  # logits are divided by it before top_k and top_p
    top_k: int = 50  # keep the k most probable tokens; 0 keeps all (transformers' default is 50)
    top_p: float = 1.0  # keep the smallest set of most probable tokens whose probability reaches top_p
    seed: int = 0  # the sampler's own random generator starts here: the same seed gives the same text


@dataclass
class Candidate:
    token: int
    token_str: str
    probability: float  # in the model's own distribution: softmax of its logits, before temperature, top-k, top-p


@dataclass
class GenerationStep:
    """One new token, with what else the model considered at that step."""

    position: int  # the token's position in the whole sequence (trace.tokens)
    token: int
    token_str: str
    probability: float  # the model's probability of this token (as in Candidate)
    candidates: list[Candidate]  # the model's most probable next tokens at this step, best first
    text: str  # everything generated so far, decoded without special tokens: what a stream shows


@dataclass
class GenerationResult:
    """The generated text, its steps, and the trace of one pass over prompt and generated tokens together."""

    prompt: str
    text: str  # the continuation, decoded without special tokens
    token_ids: list[int]  # the generated tokens, the </s> that ended it included
    steps: list[GenerationStep]
    stopped_by: str  # "eos" (</s>), "max_new_tokens" or "model limit" (the model's last position)
    # Its attentions are causal (zero above the diagonal). Its logit lens is read at the positions whose outputs
    # predicted the generated tokens: logit_lens.positions[i] == steps[i].position - 1.
    trace: Trace
    sampling: Sampling
    notices: list[str] = field(default_factory=list)


class GenerationRun:
    """A generation under way: iterate it for each new token as it comes, then call `result()` for the trace.

    Each step holds the model's lock only for its own pass, so a stream read slowly does not keep other requests
    waiting; the cache of keys and values and the random generator belong to this run alone."""

    def __init__(
        self,
        loaded: LoadedModel,
        prompt: str,
        encoded: Encoded,
        max_new_tokens: int,
        sampling: Sampling,
        candidates: int,
    ):
        self.loaded = loaded
        self.prompt = prompt
        self.sampling = sampling
        self.steps: list[GenerationStep] = []
        self.stopped_by: str | None = None
        self._encoded = encoded
        self._ids: list[int] = encoded.inputs["input_ids"][0].tolist()
        self._prompt_length = len(self._ids)
        self._max_new_tokens = max_new_tokens
        self._candidates = candidates
        self._notices = list(encoded.notices)
        self._cache = None  # the model's keys and values of the tokens fed so far
        self._fed = 0  # tokens the cache holds
        self._device = next(loaded.model.parameters()).device
        self._generator = None
        if sampling.do_sample:
            self._generator = torch.Generator(device=self._device).manual_seed(sampling.seed)

    def __iter__(self) -> Iterator[GenerationStep]:
        """The steps made so far, then new ones until the generation stops."""
        yield from list(self.steps)
        while self.stopped_by is None:
            yield self._step()

    @property
    def generated_ids(self) -> list[int]:
        return self._ids[self._prompt_length :]

    @torch.no_grad()
    def _step(self) -> GenerationStep:
        tokenizer = self.loaded.tokenizer
        with self.loaded.lock:
            ids = torch.tensor([self._ids], device=self._device)
            positions = roberta_positions(ids, self.loaded.config.pad_token_id)
            output = self.loaded.model(
                input_ids=ids[:, self._fed :],
                position_ids=positions[:, self._fed :],
                past_key_values=self._cache,
                use_cache=True,
            )
            self._cache, self._fed = output.past_key_values, len(self._ids)
            logits = output.logits[0, -1].float()  # [vocab] what the last position predicts next
            token = next_token(logits, self.sampling, self._generator)
            probs = logits.softmax(dim=-1)
            top_probs, top_ids = probs.topk(self._candidates)
        self._ids.append(token)
        generated = self.generated_ids
        step = GenerationStep(
            position=len(self._ids) - 1,
            token=token,
            token_str=tokenizer.decode([token]),
            probability=float(probs[token]),
            candidates=[
                Candidate(i, tokenizer.decode([i]), p) for i, p in zip(top_ids.tolist(), top_probs.tolist())
            ],
            text=tokenizer.decode(generated, skip_special_tokens=True),
        )
        self.steps.append(step)
        if token == tokenizer.eos_token_id:
            self.stopped_by = "eos"
        elif len(generated) == self._max_new_tokens:
            self.stopped_by = "max_new_tokens"
        elif len(self._ids) == self.loaded.max_tokens:
            self.stopped_by = "model limit"
            self._notices.append(
                f"Generation stopped after {len(generated)} tokens at the model's last position: it reads at most "
                f"{self.loaded.max_tokens} tokens, prompt included."
            )
        return step

    def result(self, *, options: CaptureOptions | None = None) -> GenerationResult:
        """Finish the generation if it is still going, then trace one pass over the whole sequence."""
        for _ in self:
            pass
        generated = self.generated_ids
        # The output at position p predicts token p + 1: these positions predicted the generated tokens.
        lens_positions = list(range(self._prompt_length - 1, len(self._ids) - 1))
        ids = torch.tensor([self._ids])
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        tokens = sequence_tokens(self._encoded.tokens, generated, self.loaded.tokenizer)
        _, trace = captured_pass(
            self.loaded,
            Encoded(inputs, tokens, []),
            lambda hidden: self.loaded.lm_head(hidden[0, lens_positions]),
            lens_positions=lens_positions,
            options=options,
        )
        text = self.loaded.tokenizer.decode(generated, skip_special_tokens=True)
        notices = self._notices + list(trace.notices)
        return GenerationResult(self.prompt, text, generated, list(self.steps), self.stopped_by, trace, self.sampling,
                                notices)


def generate_steps(
    loaded: LoadedModel,
    prompt: str,
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int = 0,
    candidates: int = 5,
) -> GenerationRun:
    """Start generating from `prompt`: iterate the returned run for each new token, then `run.result()`.

    Every argument is checked here, before any token is made (RplnError naming the field)."""
    require_head(loaded, "causal-lm")
    if not loaded.config.is_decoder:
        # load_model always loads a causal LM as a decoder; a model built by hand may not be one.
        raise RplnError(
            f"'{loaded.name}' is not configured as a decoder (is_decoder=False): it would attend both ways."
        )
    tokenizer = loaded.tokenizer
    check_text(prompt, "prompt")
    max_new_tokens = whole_number(max_new_tokens, "max_new_tokens", 1, budgets.current().max_new_tokens)
    sampling = Sampling(
        do_sample=check_flag(do_sample, "do_sample"),
        temperature=real_number(temperature, "temperature", 0.0, MAX_TEMPERATURE),
        top_k=whole_number(top_k, "top_k", 0, len(tokenizer)),
        top_p=real_number(top_p, "top_p", 0.0, 1.0),
        seed=whole_number(seed, "seed", 0, MAX_SEED),
    )
    candidates = budgets.check_top_k(candidates, "candidates", vocabulary=len(tokenizer))
    length = len(tokenizer(prompt)["input_ids"]) - 1  # without the </s> the tokenizer ends it with
    if length >= loaded.max_tokens:
        raise RplnError(
            f"The prompt is {length} tokens long; this model reads at most {loaded.max_tokens} tokens, the generated "
            "ones included, so it leaves no room to generate. Shorten the prompt."
        )
    encoded = encode(tokenizer, prompt, max_tokens=loaded.max_tokens)  # not cut: the prompt fits
    prompt_input = Encoded(
        {name: encoded.inputs[name][:, :length] for name in ("input_ids", "attention_mask")},
        first_tokens(encoded.tokens, length),
        list(encoded.notices),
    )
    return GenerationRun(loaded, prompt, prompt_input, max_new_tokens, sampling, candidates)


@one_call_at_a_time
def generate(
    loaded: LoadedModel, prompt: str, *, options: CaptureOptions | None = None, **settings: Any
) -> GenerationResult:
    """Continue `prompt` by up to `max_new_tokens` tokens (at most budgets.max_new_tokens), stopping at </s>.

    `settings` are generate_steps's keywords, with its defaults: greedy unless `do_sample=True`, which samples with
    transformers' temperature, top_k and top_p, from a generator seeded with `seed`; `candidates`: how many of the
    model's most probable tokens each step lists."""
    return generate_steps(loaded, prompt, **settings).result(options=options)


def next_token(logits: Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The argmax of `logits` ([vocab], float32), or a draw after transformers' temperature, top-k and top-p
    warpers, applied in that order and skipped at their neutral values as `generate` skips them."""
    if not sampling.do_sample:
        return int(logits.argmax())
    scores = logits
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k != 0:
        kth_best = scores.topk(min(sampling.top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth_best, -math.inf)
    if sampling.top_p < 1.0:
        ascending, order = scores.sort()
        # Drop the least probable tokens while what they hold together stays within 1 - top_p; keep the best one.
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - sampling.top_p
        drop[-1] = False
        scores = scores.masked_fill(drop.scatter(0, order, drop), -math.inf)
    return int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator))


def roberta_positions(ids: Tensor, pad_token_id: int) -> Tensor:
    """The position ids RoBERTa's embeddings give `ids` ([1, tokens]) when none are passed: counting from
    pad_token_id + 1, padding tokens at pad_token_id."""
    real = (ids != pad_token_id).long()
    return real.cumsum(dim=-1) * real + pad_token_id


def sequence_tokens(prompt: Tokens, generated: list[int], tokenizer) -> Tokens:
    """The prompt's tokens followed by the generated ones; a generated token's offsets index the generated text."""
    tokens = Tokens(list(prompt.ids), list(prompt.strings), list(prompt.offsets), list(prompt.special),
                    list(prompt.segments))
    special_ids = set(tokenizer.all_special_ids)
    end = 0
    for count, token in enumerate(generated, start=1):
        tokens.ids.append(token)
        if token in special_ids:  # </s>: no text, like the specials of an encoding
            tokens.strings.append(tokenizer.convert_ids_to_tokens(token))
            tokens.offsets.append((0, 0))
            tokens.special.append(True)
            tokens.segments.append(None)
            continue
        # Decoding the prefix so far (not the token alone) keeps a character split over tokens whole.
        start, end = end, max(end, len(tokenizer.decode(generated[:count], skip_special_tokens=True)))
        tokens.strings.append(readable(tokenizer.decode([token])))
        tokens.offsets.append((start, end))
        tokens.special.append(False)
        tokens.segments.append(1)
    return tokens


def real_number(value, what: str, low: float, high: float) -> float:
    """`value` as a float in (low, high]: the sampling knobs, where `low` itself would mean nothing (or divide by 0)."""
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and low < value <= high):
        raise RplnError(f"{what} must be a number above {low:g} and at most {high:g}; got {value!r}.")
    return float(value)
