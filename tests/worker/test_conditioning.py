"""Tests for A1111-style text conditioning (runtime.conditioning) on the tiny SD1.x model.

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_conditioning.py -q -p no:cacheprovider``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from a1111.prompts import PromptError
from runtime.checkpoints.loading import load_pipeline
from runtime.conditioning import (
    CHUNK_LENGTH,
    Embedding,
    EmbeddingError,
    encode_pair,
    encode_prompts,
    load_embedding_file,
    prompt_chunks,
)
from runtime.tiny.embedding import write_tiny_embedding
from runtime.tiny.model import write_tiny_checkpoint

POSITIONS = CHUNK_LENGTH + 2  # 77
COMMA = 267  # ",</w>" in CLIP's vocabulary


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors")
    return load_pipeline(checkpoint, cache_dir=tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def width(pipe) -> int:
    return pipe.text_encoder.config.hidden_size


@pytest.fixture(scope="module")
def tiny_embedding(pipe, width: int, tmp_path_factory: pytest.TempPathFactory) -> Embedding:
    path = write_tiny_embedding(tmp_path_factory.mktemp("embeddings") / "tinyemb.safetensors", width=width)
    return load_embedding_file(path)


def encode(pipe, prompts: list[str], **options) -> torch.Tensor:
    return encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, **options)


def words(word: str, count: int) -> str:
    return " ".join([word] * count)


def token_id(pipe, word: str) -> int:
    (ids,) = pipe.tokenizer([word], add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


# --------------------------------------------------------------------------- plain prompts


def test_plain_prompts_match_diffusers_encode_prompt(pipe) -> None:
    prompts = ["a photo of a cat", "A majestic lion, golden hour, 8k, highly detailed!!"]
    negatives = ["", "blurry, lowres"]
    expected, expected_negative = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=negatives)

    ours, ours_negative = encode_pair(pipe.tokenizer, pipe.text_encoder, prompts, negatives)

    assert ours.shape == expected.shape == (2, POSITIONS, pipe.text_encoder.config.hidden_size)
    assert ours_negative.shape == expected_negative.shape
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_negative, expected_negative)


def test_sd2_style_padding_matches_diffusers(pipe) -> None:
    # SD2's OpenCLIP tokenizer pads with "!" (id 0) after the first EOS; A1111 and diffusers agree.
    tokenizer = copy.deepcopy(pipe.tokenizer)
    tokenizer.pad_token = "!"
    sd2_style = StableDiffusionPipeline(**{**pipe.components, "tokenizer": tokenizer}, requires_safety_checker=False)
    expected, _ = sd2_style.encode_prompt(["a photo of a cat"], "cpu", 1, False)
    ours = encode_prompts(tokenizer, pipe.text_encoder, ["a photo of a cat"])
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, encode(pipe, ["a photo of a cat"]))


def test_result_follows_device_and_dtype_arguments(pipe) -> None:
    result = encode(pipe, ["a cat"], device="cpu", dtype=torch.float16)
    assert result.dtype == torch.float16 and result.device.type == "cpu"
    assert encode(pipe, []).shape == (0, POSITIONS, pipe.text_encoder.config.hidden_size)


# --------------------------------------------------------------------------- attention weights


def test_weight_changes_conditioning_and_weight_one_does_not(pipe) -> None:
    plain, weighted, unit = encode(pipe, ["a photo of cat", "a photo of (cat:1.5)", "a photo of (cat:1.0)"])
    assert not torch.allclose(plain, weighted)
    assert torch.equal(plain, unit)


def test_emphasis_multiplies_and_restores_the_mean(pipe) -> None:
    # A real CLIP's final layer norm has a bias, so its output's mean is not zero. The tiny model's
    # bias may be all zeros (transformers' own init), and then every row's mean is exactly 0 and
    # the restored mean would be 0/0: give this copy a bias, as a trained encoder has.
    text_encoder = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        text_encoder.final_layer_norm.bias.add_(0.25)
    plain, weighted = encode_prompts(pipe.tokenizer, text_encoder, ["a photo of cat", "a photo of (cat:1.5)"])
    assert plain.mean().abs() > 0.1
    multipliers = torch.ones(POSITIONS)
    multipliers[4] = 1.5  # BOS, a, photo, of, cat
    expected = plain * multipliers[:, None]
    expected = expected * (plain.mean() / expected.mean())
    torch.testing.assert_close(weighted, expected)
    torch.testing.assert_close(weighted.mean(), plain.mean())


def test_zero_mean_output_is_not_turned_into_nan(pipe) -> None:
    # A1111 divides the mean by the new mean: 0 / 0 = NaN for an all-zero chunk; we leave it as is.
    text_encoder = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        text_encoder.final_layer_norm.weight.zero_()
        text_encoder.final_layer_norm.bias.zero_()
    result = encode_prompts(pipe.tokenizer, text_encoder, ["a photo of a cat", "a photo of (cat:1.3)"])
    assert torch.equal(result, torch.zeros_like(result))


def test_square_brackets_divide_by_1_1(pipe) -> None:
    bracketed, explicit, doubled, nested = encode(
        pipe, ["a [cat] sat", "a (cat:0.9090909) sat", "a ((cat)) sat", "a (cat:1.21) sat"]
    )
    torch.testing.assert_close(bracketed, explicit)
    torch.testing.assert_close(doubled, nested)


def test_escaped_brackets_are_literal_text(pipe) -> None:
    escaped, literal = encode(pipe, [r"a \(cat\)", "a (cat)"])
    assert not torch.allclose(escaped, literal)
    chunk = prompt_chunks(pipe.tokenizer, r"a \(cat\)")[0]
    assert set(chunk.multipliers) == {1.0}


def test_bad_weight_is_a_prompt_error(pipe) -> None:
    with pytest.raises(PromptError):
        encode(pipe, ["a (cat:1.2.3)"])


# --------------------------------------------------------------------------- chunks


def test_long_prompt_takes_three_chunks_and_negative_is_padded(pipe) -> None:
    long_prompt = words("cat", 200)
    chunks = prompt_chunks(pipe.tokenizer, long_prompt)
    assert [sum(1 for t in c.tokens if t == token_id(pipe, "cat")) for c in chunks] == [75, 75, 50]

    positive, negative = encode_pair(pipe.tokenizer, pipe.text_encoder, [long_prompt], ["blurry"])
    assert positive.shape == negative.shape == (1, 3 * POSITIONS, pipe.text_encoder.config.hidden_size)

    # every chunk is encoded on its own; the negative's extra chunks are empty prompts
    torch.testing.assert_close(positive[:, :POSITIONS], encode(pipe, [words("cat", 75)]))
    torch.testing.assert_close(negative[:, :POSITIONS], encode(pipe, ["blurry"]))
    empty = encode(pipe, [""])
    torch.testing.assert_close(negative[:, POSITIONS : 2 * POSITIONS], empty)
    torch.testing.assert_close(negative[:, 2 * POSITIONS :], empty)


def test_75_tokens_fit_one_chunk_and_76_need_two(pipe) -> None:
    assert len(prompt_chunks(pipe.tokenizer, words("cat", 75))) == 1
    assert len(prompt_chunks(pipe.tokenizer, words("cat", 76))) == 2
    assert len(prompt_chunks(pipe.tokenizer, "")) == 1


def test_break_starts_a_new_chunk(pipe) -> None:
    (with_break,) = encode(pipe, ["a cat BREAK a dog"])
    cat, dog = encode(pipe, ["a cat", "a dog"])
    assert with_break.shape[0] == 2 * POSITIONS
    torch.testing.assert_close(with_break, torch.cat([cat, dog]))


def test_full_chunk_moves_the_words_after_a_near_comma_to_the_next_chunk(pipe) -> None:
    cat, dog = token_id(pipe, "cat"), token_id(pipe, "dog")
    end = pipe.tokenizer.eos_token_id

    first, second = prompt_chunks(pipe.tokenizer, words("cat", 55) + ", " + words("dog", 30))
    assert first.tokens[1:57] == (cat,) * 55 + (COMMA,)  # comma 20 tokens before the end: backtrack
    assert first.tokens[57:] == (end,) * 20
    assert second.tokens[1:31] == (dog,) * 30

    first, second = prompt_chunks(pipe.tokenizer, words("cat", 54) + ", " + words("dog", 30))
    assert first.tokens[1:76] == (cat,) * 54 + (COMMA,) + (dog,) * 20  # 21 tokens back: too far
    assert second.tokens[1:11] == (dog,) * 10


def test_clip_skip_2_uses_the_penultimate_layer(pipe) -> None:
    last, penultimate = encode(pipe, ["a photo of a cat"]), encode(pipe, ["a photo of a cat"], clip_skip=2)
    assert not torch.allclose(last, penultimate)

    ids = pipe.tokenizer(
        ["a photo of a cat"], padding="max_length", max_length=POSITIONS, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = pipe.text_encoder.final_layer_norm(hidden)
    torch.testing.assert_close(penultimate, expected)

    with pytest.raises(ValueError, match="CLIP skip"):
        encode(pipe, ["a cat"], clip_skip=pipe.text_encoder.config.num_hidden_layers + 1)


# --------------------------------------------------------------------------- embeddings


def test_embedding_name_in_prompt_changes_conditioning(pipe, tiny_embedding: Embedding) -> None:
    assert tiny_embedding.name == "tinyemb" and tiny_embedding.n_vectors == 2
    embeddings = {tiny_embedding.name: tiny_embedding}
    without = encode(pipe, ["a photo of tinyemb"])
    with_embedding = encode(pipe, ["a photo of tinyemb"], embeddings=embeddings)
    assert not torch.allclose(without, with_embedding)
    # the encoder is causal: BOS, a, photo, of are unchanged, the embedding and after are not
    torch.testing.assert_close(with_embedding[:, :4], without[:, :4])
    assert not torch.allclose(with_embedding[:, 4:], without[:, 4:])

    unknown = "a photo of othername"
    assert torch.equal(encode(pipe, [unknown], embeddings=embeddings), encode(pipe, [unknown]))
    assert not pipe.text_encoder.get_input_embeddings()._forward_hooks


def test_embedding_vectors_replace_the_placeholder_tokens(pipe) -> None:
    token_embedding = pipe.text_encoder.get_input_embeddings().weight.detach()
    vectors = token_embedding[[token_id(pipe, "cat"), token_id(pipe, "dog")]].clone()
    embeddings = {"twowords": Embedding("twowords", vectors)}

    chunk = prompt_chunks(pipe.tokenizer, "a photo of twowords", embeddings=embeddings)[0]
    assert chunk.tokens[4:6] == (0, 0) and chunk.fixes[0].offset == 3

    ours = encode(pipe, ["a photo of (twowords:1.2)"], embeddings=embeddings)
    torch.testing.assert_close(ours, encode(pipe, ["a photo of (cat dog:1.2)"]))


def test_embedding_moved_by_comma_backtrack_keeps_a1111_placement(pipe, tiny_embedding: Embedding) -> None:
    # A1111 moves the tokens after the comma to the next chunk but leaves the embedding's fix behind.
    embeddings = {"tinyemb": tiny_embedding}
    prompt = words("cat", 60) + ", tinyemb " + words("dog", 20)
    first, second = prompt_chunks(pipe.tokenizer, prompt, embeddings=embeddings)
    assert first.tokens[61] == COMMA and [fix.offset for fix in first.fixes] == [61]
    assert second.tokens[1:3] == (0, 0) and second.fixes == ()


def test_wrong_width_embedding_is_refused_when_used(pipe, width: int) -> None:
    wide = Embedding("wideemb", torch.zeros(2, 768))
    message = f"wideemb has 768-wide vectors, this checkpoint's text encoder needs {width}"
    with pytest.raises(EmbeddingError, match=message):
        encode(pipe, ["a photo of wideemb"], embeddings={"wideemb": wide})
    encode(pipe, ["a photo of a cat"], embeddings={"wideemb": wide})  # present but unused: fine


def test_hook_is_removed_when_encoding_fails(pipe, tiny_embedding: Embedding) -> None:
    def fail(module, args):
        raise RuntimeError("boom")

    failing = pipe.text_encoder.final_layer_norm.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            encode(pipe, ["tinyemb"], embeddings={"tinyemb": tiny_embedding})
    finally:
        failing.remove()
    assert not pipe.text_encoder.get_input_embeddings()._forward_hooks


# --------------------------------------------------------------------------- embedding files


def test_a1111_pt_embedding_loads(tmp_path: Path) -> None:
    vectors = torch.randn(3, 32)
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "x", "step": 500}
    torch.save(a1111, tmp_path / "mine.pt")
    embedding = load_embedding_file(tmp_path / "mine.pt")
    assert embedding.name == "mine" and torch.equal(embedding.vectors, vectors)

    legacy = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors)})  # torch 1.11-era A1111 files
    torch.save({"string_to_param": legacy, "name": "old", "step": 1}, tmp_path / "old.pt")
    assert torch.equal(load_embedding_file(tmp_path / "old.pt").vectors, vectors)

    torch.save({"<concept>": vectors[0]}, tmp_path / "learned_embeds.bin")  # diffusers concept, 1-D
    assert load_embedding_file(tmp_path / "learned_embeds.bin").vectors.shape == (1, 32)


def test_safetensors_embedding_with_single_tensor_loads(tmp_path: Path) -> None:
    save_file({"*": torch.randn(4, 32)}, tmp_path / "single.safetensors")
    assert load_embedding_file(tmp_path / "single.safetensors").vectors.shape == (4, 32)


def _touch(path: str) -> None:  # what a hostile pickle would run
    Path(path).touch()


class Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (str(self.marker),))


def test_pickle_that_is_not_weights_only_safe_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "payload": Hostile(marker)}, tmp_path / "evil.pt")
    with pytest.raises(EmbeddingError, match="could run code"):
        load_embedding_file(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the file really is hostile
    assert marker.exists()


def test_bad_embedding_files_are_refused(tmp_path: Path) -> None:
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, tmp_path / "xl.safetensors")
    with pytest.raises(EmbeddingError, match="SDXL"):
        load_embedding_file(tmp_path / "xl.safetensors")

    save_file({"a": torch.randn(2, 32), "b": torch.randn(2, 32)}, tmp_path / "two.safetensors")
    with pytest.raises(EmbeddingError, match="more than one"):
        load_embedding_file(tmp_path / "two.safetensors")

    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    for name in ("junk.safetensors", "junk.pt", "image.png", "missing.pt"):
        with pytest.raises(EmbeddingError):
            load_embedding_file(tmp_path / name)

    with pytest.raises(EmbeddingError, match="vectors"):
        Embedding("toolong", torch.zeros(CHUNK_LENGTH + 1, 32))


# --------------------------------------------------------------------------- in a pipeline


def _generate(pipe, **prompting) -> np.ndarray:
    txt2img = StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
    txt2img.set_progress_bar_config(disable=True)
    return txt2img(
        **prompting,
        num_inference_steps=2,
        guidance_scale=7.0,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(1234),
        output_type="np",
    ).images


def test_pipeline_with_prompt_embeds(pipe) -> None:
    short = "a photo of a cat"
    positive, negative = encode_pair(pipe.tokenizer, pipe.text_encoder, [short], [""])
    from_embeds = _generate(pipe, prompt_embeds=positive, negative_prompt_embeds=negative)
    from_text = _generate(pipe, prompt=short, negative_prompt="")
    assert np.abs(from_embeds * 255 - from_text * 255).max() <= 1.0

    long_prompt = ", ".join(["a cat"] * 50) + ", " + ", ".join(["a dog"] * 17)  # 200 tokens
    positive, negative = encode_pair(pipe.tokenizer, pipe.text_encoder, [long_prompt], ["blurry"])
    assert positive.shape[1] == negative.shape[1] == 3 * POSITIONS
    image = _generate(pipe, prompt_embeds=positive, negative_prompt_embeds=negative)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
