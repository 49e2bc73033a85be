"""Prompt expansion (PAI's BeautifulPrompt, A1111's promptgen) as a typed request: `PromptgenRequest` (pure).

A member sends a short prompt ("a cat") and a prompt-generation model's name; a worker runs the
causal language model and returns `num_results` longer prompts. The native API
(`POST /api/v1/promptgen`) and the workspace's BeautifulPrompt tab both parse their input here,
with the field readers of `a1111/fields.py`, so every refusal is a `RequestValidationError` naming
the field; `promptgen_submit` (`inference/services.py`) then resolves the model and queues one
`Job` of kind "promptgen". The sampling settings are the promptgen extension's (A1111's
`extensions/promptgen`): temperature, top-k, top-p, repetition penalty, a maximum length in new
tokens, the number of results and a seed (-1: a random one, drawn at submit so the job records it).

The bounds are module constants (`MAX_*`, `MIN_*`); a deployment may lower the prompt and length
limits through `PromptgenLimits` (`inference/limits.py` `promptgen_limits()`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from a1111.fields import RequestValidationError, read_float, read_int, read_str

PROMPTGEN_KIND = "promptgen"

MAX_PROMPT_CHARS = 1000  # a short prompt to expand; the results are longer
MAX_MODEL_NAME_CHARS = 300
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 4.0
MIN_TOP_K, MAX_TOP_K = 0, 1000  # 0: no top-k filtering
MIN_TOP_P, MAX_TOP_P = 0.01, 1.0  # 1: no nucleus filtering
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 1.0, 4.0
MIN_MAX_LENGTH, MAX_MAX_LENGTH = 1, 400  # new tokens
MIN_RESULTS, MAX_RESULTS = 1, 16
MAX_SEED = 2**32 - 1  # torch generators take any 64-bit seed; A1111 seeds are 32-bit


@dataclass(frozen=True)
class PromptgenLimits:
    """What a deployment allows (each at most the module's bound)."""

    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_length: int = MAX_MAX_LENGTH
    max_results: int = MAX_RESULTS


@dataclass(frozen=True)
class PromptgenRequest:
    prompt: str
    model: str
    temperature: float = 1.0
    top_k: int = 12
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_length: int = 150  # new tokens per result
    num_results: int = 4
    seed: int = -1  # -1: random (drawn by `with_seed` at submit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptgenRequest:
        """Rebuild a request stored by `to_dict` (already validated: no checks; other keys ignored)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{key: value for key, value in data.items() if key in names})

    def with_seed(self, rng: random.Random | None = None) -> PromptgenRequest:
        """The request with a concrete seed (a random one for -1), so the job can be run again alike."""
        if self.seed != -1:
            return self
        return replace(self, seed=(rng or random.SystemRandom()).randrange(0, MAX_SEED + 1))


def parse_promptgen_request(data: Mapping[str, Any], limits: PromptgenLimits | None = None) -> PromptgenRequest:
    """A validated request from a JSON body (unknown keys ignored); `RequestValidationError` names the field."""
    limits = limits or PromptgenLimits()
    if not isinstance(data, Mapping):
        raise RequestValidationError("body", "must be a JSON object")
    prompt = read_str(data, "prompt", "", limits.max_prompt_chars).strip()
    if not prompt:
        raise RequestValidationError("prompt", "must not be empty: type a short prompt to expand, e.g. 'a cat'")
    model = read_str(data, "model", "", MAX_MODEL_NAME_CHARS).strip()
    if not model:
        raise RequestValidationError("model", "required: GET /api/v1/promptgen/models lists the models you may use")
    seed = read_int(data, "seed", -1, -1, MAX_SEED)
    return PromptgenRequest(
        prompt=prompt,
        model=model,
        temperature=read_float(data, "temperature", 1.0, MIN_TEMPERATURE, MAX_TEMPERATURE),
        top_k=read_int(data, "top_k", 12, MIN_TOP_K, MAX_TOP_K),
        top_p=read_float(data, "top_p", 1.0, MIN_TOP_P, MAX_TOP_P),
        repetition_penalty=read_float(data, "repetition_penalty", 1.0, MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY),
        max_length=read_int(data, "max_length", 150, MIN_MAX_LENGTH, min(limits.max_length, MAX_MAX_LENGTH)),
        num_results=read_int(data, "num_results", 4, MIN_RESULTS, min(limits.max_results, MAX_RESULTS)),
        seed=seed,
    )


# --- what config.json says about a model folder ----------------------------------------------

# Causal LM families the runtime loads with AutoModelForCausalLM (config.json `model_type`), for a
# config without `architectures`.
CAUSAL_MODEL_TYPES = frozenset({
    "bloom", "gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "llama", "mistral", "qwen2", "falcon", "phi", "gemma",
    "codegen", "ctrl", "openai-gpt", "xglm", "biogpt",
})


def causal_lm_problem(config: Any) -> str:
    """Why a parsed config.json is not a causal language model ("" when it is one)."""
    if not isinstance(config, Mapping):
        return "its config.json is not a JSON object"
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        names = [str(name) for name in architectures]
        if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names):
            return ""
        return f"it is not a causal language model (config.json architectures: {', '.join(names)[:200]})"
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CAUSAL_MODEL_TYPES:
        return ""
    return f"it is not a causal language model this platform knows (config.json model_type: {str(model_type)[:60]!r})"


# --- what the model reads, and what the member gets back ---------------------------------------

# PAI's BeautifulPrompt models (pai-bloom-1b1-text2prompt-sd, -v2) were tuned on this instruction;
# their model card formats every input so and returns only what follows "Output:".
BEAUTIFUL_PROMPT_TEMPLATE = (
    "Instruction: Give a simple description of the image to generate a drawing prompt.\nInput: {prompt}\nOutput:"
)
INSTRUCTION_MODEL_TYPES = frozenset({"bloom"})


def uses_instruction(model_type: str) -> bool:
    """BLOOM prompt models (PAI's) answer an instruction; GPT-2 ones (A1111's promptgen, MagicPrompt)
    continue the prompt itself."""
    return model_type in INSTRUCTION_MODEL_TYPES


def model_input(prompt: str, model_type: str) -> str:
    """The text the model is given for a member's short prompt."""
    return BEAUTIFUL_PROMPT_TEMPLATE.format(prompt=prompt) if uses_instruction(model_type) else prompt


def result_text(prompt: str, generated: str, model_type: str) -> str:
    """One result as the member sees it: PAI's models' answer alone; a continuation with its prompt."""
    # one printable line: control characters (a model may emit any byte) become spaces, runs collapse
    generated = " ".join("".join(ch if ch.isprintable() else " " for ch in generated).split())
    if uses_instruction(model_type):
        return generated
    joined = f"{prompt}{generated}" if generated[:1] in (",", ".", ";", ":") else f"{prompt} {generated}"
    return joined.strip()
