"""Tests for the worker's model-loading core: tokenizer, architecture detection, tiny checkpoint, loading.

Plain pytest, no Django: ``HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/worker -p no:django -q``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from inference.hashing import file_sha256
from runtime.checkpoints.loading import (
    ARCHITECTURES,
    UnsupportedCheckpoint,
    clip_vocab_and_merges,
    detect_architecture,
    load_pipeline,
    materialize_config,
    read_safetensors_shapes,
)
from runtime.tiny.model import (
    build_tiny_components,
    components_to_ldm,
    write_tiny_checkpoint,
)

# Reference ids produced by open_clip 3.3.0's SimpleTokenizer (OpenAI CLIP's tokenizer) with the
# start/end tokens added.
OPENAI_CLIP_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "A majestic lion, golden hour, 8k, highly detailed!!": [
        49406, 320, 15335, 5567, 267, 3878, 2232, 267, 279, 330, 267, 5302, 12609, 748, 49407,
    ],
    "masterpiece, best quality, (1girl:1.2), looking at viewer": [
        49406, 12066, 267, 949, 3027, 267, 263, 272, 1611, 281, 272, 269, 273, 2361, 1312, 536, 15061, 49407,
    ],
    "Ünïcödé café — naïve 東京 🐱 emoji": [
        49406, 6522, 77, 35689, 66, 7255, 67, 4166, 15304, 2005, 1097, 35689, 563, 48338, 21078, 361,
        22979, 16327, 49407,
    ],
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-sd.safetensors", seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_checkpoint: Path, cache_dir: Path):
    return load_pipeline(tiny_checkpoint, cache_dir=cache_dir)


def _write_fake(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


# --------------------------------------------------------------------------- tokenizer


def test_clip_vocab_layout() -> None:
    vocab, merges = clip_vocab_and_merges()
    assert len(merges) == 48894
    assert len(vocab) == 49408
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["".join(merges[0].split())] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


@pytest.mark.parametrize("arch_name", sorted(ARCHITECTURES))
def test_tokenizer_matches_openai_clip(arch_name: str, cache_dir: Path) -> None:
    from transformers import CLIPTokenizer

    arch = ARCHITECTURES[arch_name]
    folder = materialize_config(arch, cache_dir)
    # an SDXL refiner has only SDXL's second tokenizer
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder=arch.tokenizer_subfolders[0], local_files_only=True)
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    for prompt, expected in OPENAI_CLIP_IDS.items():
        assert tokenizer(prompt).input_ids == expected, prompt


def test_materialize_config_is_reused(tmp_path: Path) -> None:
    arch = ARCHITECTURES["tiny-sd"]
    first = materialize_config(arch, tmp_path / "cache")
    marker = first / "marker"
    marker.write_text("kept")
    assert materialize_config(arch, tmp_path / "cache") == first
    assert marker.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no temp leftovers
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
                 "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"):
        assert (first / name).is_file(), name


def test_shipped_files_are_small() -> None:
    root = Path(ARCHITECTURES["sd15"].config_dir).parent
    for path in root.rglob("*"):
        if path.is_file():
            assert path.stat().st_size < 1_000_000, path


# --------------------------------------------------------------------------- registry consistency


@pytest.mark.parametrize("arch_name", sorted(ARCHITECTURES))
def test_signature_matches_shipped_config(arch_name: str) -> None:
    """The LDM shapes implied by each config folder (built on the meta device) match its signature only."""
    from diffusers import AutoencoderKL

    from runtime.tiny.families import ldm_shapes_for_architecture

    arch = ARCHITECTURES[arch_name]
    shapes = ldm_shapes_for_architecture(arch_name)
    assert arch.matches(shapes)
    assert [a.name for a in ARCHITECTURES.values() if a.matches(shapes)] == [arch_name]
    assert len(AutoencoderKL.load_config(arch.config_dir / "vae")["block_out_channels"]) == 4  # latent scale factor 8


# --------------------------------------------------------------------------- tiny checkpoint


def test_tiny_checkpoint_file(tiny_checkpoint: Path) -> None:
    shapes = read_safetensors_shapes(tiny_checkpoint)
    assert shapes["model.diffusion_model.input_blocks.0.0.weight"] == (32, 4, 3, 3)
    assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"] == (16, 16, 1, 1)
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in shapes
    assert tiny_checkpoint.stat().st_size < 12_000_000
    assert not [p for p in tiny_checkpoint.parent.iterdir() if p != tiny_checkpoint]  # no temp file left


def test_tiny_checkpoint_is_deterministic(tiny_checkpoint: Path, tmp_path: Path) -> None:
    again = write_tiny_checkpoint(tmp_path / "nested" / "again.safetensors", seed=0)
    other = write_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    assert file_sha256(again) == file_sha256(tiny_checkpoint)
    assert file_sha256(other) != file_sha256(tiny_checkpoint)


def test_tiny_checkpoint_round_trip(tiny_pipeline) -> None:
    built = build_tiny_components(seed=0)
    for name, module in built.items():
        expected = module.state_dict()
        loaded = getattr(tiny_pipeline, name).state_dict()
        assert set(loaded) == set(expected), name
        for key, tensor in expected.items():
            assert loaded[key].dtype == torch.float32, (name, key)
            assert torch.equal(loaded[key], tensor), (name, key)


def test_ldm_conversion_covers_every_tensor() -> None:
    built = build_tiny_components(seed=0)
    tensors = components_to_ldm(built)
    assert len(tensors) == sum(len(m.state_dict()) for m in built.values())


def test_detect_architecture_tiny(tiny_checkpoint: Path) -> None:
    arch = detect_architecture(tiny_checkpoint)
    assert arch.name == "tiny-sd"
    assert arch is ARCHITECTURES["tiny-sd"]
    assert (arch.config_dir / "model_index.json").is_file()


def test_detect_architecture_sd15_from_header_only(tmp_path: Path) -> None:
    path = _write_fake(tmp_path / "sd15.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    })
    assert detect_architecture(path).name == "sd15"


# --------------------------------------------------------------------------- unsupported files


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the .ckpt was unpickled",))

    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": Boom()}))
    with pytest.raises(UnsupportedCheckpoint, match="pickle"):
        detect_architecture(path)
    with pytest.raises(UnsupportedCheckpoint, match="pickle"):
        load_pipeline(path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("shapes", "hint"),
    [
        ({"foo.weight": (4, 4)}, "no Stable Diffusion UNet"),
        ({"lora_unet_down_blocks_0.lora_down.weight": (4, 320)}, "LoRA"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
          "conditioner.embedders.1.model.ln_final.weight": (1280,)}, "SDXL"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
          "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}, "9 input"),
    ],
)
def test_unknown_safetensors_is_refused(tmp_path: Path, shapes: dict, hint: str) -> None:
    path = _write_fake(tmp_path / "unknown.safetensors", shapes)
    with pytest.raises(UnsupportedCheckpoint, match=hint):
        detect_architecture(path)
    with pytest.raises(UnsupportedCheckpoint):
        load_pipeline(path, cache_dir=tmp_path / "cache")


def test_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    path = _write_fake(tmp_path / "unet-only.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (32, 32),
    })
    with pytest.raises(UnsupportedCheckpoint, match="first_stage_model"):
        detect_architecture(path)


@pytest.mark.parametrize("content", [b"", b"hello", struct.pack("<Q", 5) + b"notjs", b"\x80\x04K\x01." + b"\0" * 16])
def test_non_safetensors_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(UnsupportedCheckpoint):
        detect_architecture(path)


def test_directory_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedCheckpoint, match="model_index"):
        load_pipeline(tmp_path, cache_dir=tmp_path / "cache")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_pipeline(tmp_path / "nope.safetensors", cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- loading + generating


def test_loaded_pipeline_components(tiny_pipeline) -> None:
    assert type(tiny_pipeline).__name__ == "StableDiffusionPipeline"
    assert tiny_pipeline.safety_checker is None
    assert tiny_pipeline.vae_scale_factor == 8
    assert tiny_pipeline.tokenizer("a photo of a cat").input_ids == OPENAI_CLIP_IDS["a photo of a cat"]
    assert tiny_pipeline.scheduler.config.beta_schedule == "scaled_linear"


def test_generation_is_deterministic(tiny_pipeline) -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    tiny_pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(tiny_pipeline.scheduler.config)

    def generate(seed: int) -> np.ndarray:
        image = tiny_pipeline(
            "a photo of a cat",
            negative_prompt="blurry",
            width=64,
            height=64,
            num_inference_steps=4,
            guidance_scale=7.0,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]
        assert image.size == (64, 64)
        return np.asarray(image)

    first, second, other = generate(1234), generate(1234), generate(4321)
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_diffusers_folder_loads(tiny_pipeline, tmp_path: Path) -> None:
    tiny_pipeline.save_pretrained(str(tmp_path / "folder"))
    loaded = load_pipeline(tmp_path / "folder", cache_dir=tmp_path / "cache")
    assert loaded.safety_checker is None
    for key, tensor in tiny_pipeline.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[key], tensor), key


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000  # spans several 1 MB chunks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert len(file_sha256(path)[:10]) == 10


def test_model_index_has_no_safety_checker() -> None:
    for arch in ARCHITECTURES.values():
        index = json.loads((arch.config_dir / "model_index.json").read_text())
        # SDXL pipelines have no safety checker at all; the others must not configure one.
        assert index.get("safety_checker", [None, None]) == [None, None]
        assert index.get("requires_safety_checker", False) is False
