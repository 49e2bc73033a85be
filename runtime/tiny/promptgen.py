"""Tiny random-weight prompt-generation models (GPT-2 and BLOOM) with a tokenizer made offline.

`write_tiny_promptgen(folder, family)` writes a complete transformers model folder, exactly what
an operator copies into a `models/promptgen` folder for a real model (`config.json`, the
tokenizer files, `model.safetensors`), so the worker loads it through the same
`AutoTokenizer` / `AutoModelForCausalLM` path as `pai-bloom-1b1-text2prompt-sd` or
`AUTOMATIC/promptgen-lexart`. The tokenizer is a byte-level BPE trained here on a few prompt-like
sentences (no download); the weights are random but deterministic per seed, so the texts are
gibberish made of prompt words, but every code path of a real model runs. A folder is a few
hundred KB; it is built when needed, never committed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.tiny.model import write_folder_atomically

FAMILIES = ("gpt2", "bloom")

CORPUS = (
    "a cat sitting on a windowsill, soft light, highly detailed, digital painting, artstation",
    "a portrait of a woman with red hair, oil painting, masterpiece, trending on artstation",
    "a futuristic city at night, neon lights, cyberpunk, octane render, 8k, ultra detailed",
    "a castle on a hill, fantasy landscape, dramatic clouds, sunset, concept art, matte painting",
    "a cute dog in a garden, flowers, bokeh, photography, sharp focus, studio lighting",
    "Instruction: Give a simple description of the image to generate a drawing prompt.",
    "Input: a cat. Output: a fluffy cat, intricate, elegant, illustration, by greg rutkowski",
    "a mountain lake, morning mist, cinematic, volumetric lighting, wide angle, realistic",
)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
VOCAB_SIZE = 400
MAX_POSITIONS = 2048  # GPT-2's learned positions: a long prompt plus the longest expansion fit


def train_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2's and BLOOM's kind) trained on `CORPUS`, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # only the corpus's own characters (no byte alphabet): every token decodes to printable text
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )


def build_tiny_promptgen(family: str, *, seed: int = 0):
    """(model, tokenizer) of a tiny random `family` causal LM ("gpt2" or "bloom")."""
    from transformers import BloomConfig, BloomForCausalLM, GPT2Config, GPT2LMHeadModel

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    tokenizer = train_tokenizer()
    ids = {
        "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=MAX_POSITIONS, **ids))
    else:
        model = BloomForCausalLM(BloomConfig(hidden_size=32, n_layer=2, n_head=2, **ids))
    model.eval()
    return model, tokenizer


def write_tiny_promptgen(folder: Path, family: str, *, seed: int = 0) -> Path:
    """Write a tiny model folder (`config.json`, tokenizer files, `model.safetensors`) at `folder`,
    atomically (built beside it, then renamed), replacing one already there."""
    model, tokenizer = build_tiny_promptgen(family, seed=seed)

    def save(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return write_folder_atomically(folder, save)
