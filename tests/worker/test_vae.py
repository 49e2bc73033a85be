"""Tests for swapping a standalone VAE file into a loaded pipeline (runtime.checkpoints.vae).

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_vae.py -q``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from runtime.checkpoints.loading import VAE_PREFIX, load_pipeline
from runtime.tiny.model import build_tiny_components, write_tiny_checkpoint, write_tiny_vae
from runtime.checkpoints.vae import VaeMismatch, load_vae_file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "m.safetensors")


@pytest.fixture(scope="module")
def pipe(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_pipeline(checkpoint, cache_dir=tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny.vae.safetensors", seed=1)


@pytest.fixture(scope="module")
def ldm_tensors(vae_file: Path) -> dict[str, torch.Tensor]:
    return load_file(str(vae_file))


@pytest.fixture(scope="module")
def reference_vae():
    """The diffusers VAE that write_tiny_vae(seed=1) wrote."""
    return build_tiny_components(seed=1)["vae"]


def _assert_same_weights(vae, reference) -> None:
    ours, theirs = vae.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key


def _txt2img(pipe, vae) -> np.ndarray:
    sd = StableDiffusionPipeline(**{**pipe.components, "vae": vae}, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(42)
    with torch.no_grad():
        out = sd("a photo of a cat", height=64, width=64, num_inference_steps=2, generator=generator, output_type="np")
    return out.images[0]


# --------------------------------------------------------------------------- the tiny VAE file


def test_write_tiny_vae_is_a1111_layout(vae_file: Path, ldm_tensors: dict[str, torch.Tensor]) -> None:
    assert "encoder.down.0.block.0.conv1.weight" in ldm_tensors
    assert "decoder.up.3.upsample.conv.weight" in ldm_tensors
    assert not any(k.startswith(VAE_PREFIX) for k in ldm_tensors)
    assert {t.dtype for t in ldm_tensors.values()} == {torch.float16}
    assert not list(vae_file.parent.glob(".*.tmp"))


def test_write_tiny_vae_is_deterministic(tmp_path: Path, vae_file: Path) -> None:
    again = write_tiny_vae(tmp_path / "again.safetensors", seed=1)
    other = write_tiny_vae(tmp_path / "other.safetensors", seed=2)
    assert again.read_bytes() == vae_file.read_bytes()
    assert other.read_bytes() != vae_file.read_bytes()


# --------------------------------------------------------------------------- loading


def test_loads_bare_ldm_file(pipe, vae_file: Path, ldm_tensors, reference_vae) -> None:
    vae = load_vae_file(vae_file, like=pipe.vae)
    assert vae is not pipe.vae
    assert not vae.training
    assert vae.dtype == pipe.vae.dtype and vae.device == pipe.vae.device
    assert dict(vae.config) == dict(pipe.vae.config)
    state = vae.state_dict()
    # A few tensors against the file itself (LDM name -> diffusers name) ...
    for ldm_key, diffusers_key in {
        "decoder.conv_out.weight": "decoder.conv_out.weight",
        "decoder.up.3.block.0.conv1.weight": "decoder.up_blocks.0.resnets.0.conv1.weight",
        "encoder.norm_out.bias": "encoder.conv_norm_out.bias",
    }.items():
        assert torch.equal(state[diffusers_key], ldm_tensors[ldm_key].float()), ldm_key
    # ... the attention projections (1x1 convs in the file, linear in diffusers) ...
    q_conv = ldm_tensors["decoder.mid.attn_1.q.weight"]
    assert q_conv.ndim == 4
    assert torch.equal(state["decoder.mid_block.attentions.0.to_q.weight"], q_conv[:, :, 0, 0].float())
    # ... and every tensor against the module that was written.
    _assert_same_weights(vae, reference_vae)
    assert not torch.equal(state["decoder.conv_out.weight"], pipe.vae.state_dict()["decoder.conv_out.weight"])


def test_swapped_vae_changes_the_image_deterministically(pipe, vae_file: Path) -> None:
    vae = load_vae_file(vae_file, like=pipe.vae)
    own = _txt2img(pipe, pipe.vae)
    first, second = _txt2img(pipe, vae), _txt2img(pipe, vae)
    assert first.shape == own.shape == (64, 64, 3)
    assert np.array_equal(first, second)
    assert np.abs(first - own).max() > 1e-3


def test_follows_dtype_of_like(pipe, vae_file: Path, reference_vae) -> None:
    like = copy.deepcopy(pipe.vae).to(torch.float16)
    vae = load_vae_file(vae_file, like=like)
    assert {p.dtype for p in vae.parameters()} == {torch.float16}
    assert pipe.vae.dtype == torch.float32
    _assert_same_weights(vae, reference_vae)  # the file's float16 values, unchanged


def test_a_stray_vae_prefixed_key_is_a_mismatch(tmp_path: Path, ldm_tensors, pipe) -> None:
    """diffusers' converter takes any ``vae.`` key as a prefix and then returns nothing else."""
    path = tmp_path / "stray.safetensors"
    save_file({**ldm_tensors, "vae.scale": torch.ones(1)}, str(path))
    with pytest.raises(VaeMismatch, match=r"1 unknown weights \(vae\.scale\)"):
        load_vae_file(path, like=pipe.vae)


def test_ignores_training_leftovers(tmp_path: Path, ldm_tensors, pipe, reference_vae) -> None:
    path = tmp_path / "with-loss.safetensors"
    extra = {
        "loss.logvar": torch.zeros(()),
        "loss.discriminator.main.0.weight": torch.zeros(8, 3, 4, 4),
        "model_ema.decay": torch.tensor(0.999),
        "model_ema.num_updates": torch.tensor(1000),
    }
    save_file({**ldm_tensors, **extra}, str(path))
    _assert_same_weights(load_vae_file(path, like=pipe.vae), reference_vae)


def test_loads_full_checkpoint_as_vae(pipe, checkpoint: Path) -> None:
    """A whole checkpoint (``first_stage_model.`` prefix next to UNet and text encoder): only its VAE is read."""
    vae = load_vae_file(checkpoint, like=pipe.vae)
    _assert_same_weights(vae, pipe.vae)


def test_loads_prefixed_ldm_keys(tmp_path: Path, ldm_tensors, pipe, reference_vae) -> None:
    path = tmp_path / "prefixed.safetensors"
    save_file({VAE_PREFIX + k: v for k, v in ldm_tensors.items()}, str(path))
    _assert_same_weights(load_vae_file(path, like=pipe.vae), reference_vae)


def test_loads_diffusers_layout(tmp_path: Path, pipe, reference_vae) -> None:
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in reference_vae.state_dict().items()}, str(path))
    _assert_same_weights(load_vae_file(path, like=pipe.vae), reference_vae)


def test_loads_old_diffusers_attention_names(tmp_path: Path, pipe, reference_vae) -> None:
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for key, value in reference_vae.state_dict().items():
        for new, old in renames.items():
            key = key.replace(new, old)
        state[key] = value.contiguous()
    assert "decoder.mid_block.attentions.0.query.weight" in state
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    _assert_same_weights(load_vae_file(path, like=pipe.vae), reference_vae)


# --------------------------------------------------------------------------- refusals


def _with_latent_channels(tensors: dict[str, torch.Tensor], latent: int) -> dict[str, torch.Tensor]:
    """The tiny VAE edited to ``latent`` latent channels (SD3/Flux VAEs have 16; SD1.x 4)."""
    out = dict(tensors)
    out["encoder.conv_out.weight"] = torch.zeros(2 * latent, *tensors["encoder.conv_out.weight"].shape[1:])
    out["encoder.conv_out.bias"] = torch.zeros(2 * latent)
    out["quant_conv.weight"] = torch.zeros(2 * latent, 2 * latent, 1, 1)
    out["quant_conv.bias"] = torch.zeros(2 * latent)
    out["post_quant_conv.weight"] = torch.zeros(latent, latent, 1, 1)
    out["post_quant_conv.bias"] = torch.zeros(latent)
    c = tensors["decoder.conv_in.weight"].shape[0]
    out["decoder.conv_in.weight"] = torch.zeros(c, latent, 3, 3)
    return {k: v.half() for k, v in out.items()}


def test_other_latent_channels_are_a_mismatch(tmp_path: Path, ldm_tensors, pipe) -> None:
    path = tmp_path / "flux-like.safetensors"
    save_file(_with_latent_channels(ldm_tensors, 16), str(path))
    with pytest.raises(VaeMismatch) as info:
        load_vae_file(path, like=pipe.vae)
    message = str(info.value)
    assert message.startswith("VAE 'flux-like.safetensors' does not fit this checkpoint")
    assert "7 weights have other shapes" in message
    assert "decoder.conv_in.weight is [16, 16, 3, 3] in the file but [16, 4, 3, 3] in the checkpoint" in message
    assert "16 latent channels (an SD3 or Flux VAE?), the checkpoint's 4" in message


def test_other_widths_are_a_mismatch(tmp_path: Path, ldm_tensors, pipe) -> None:
    """Every tensor twice as wide (like a real SD1.x VAE against the tiny model)."""
    wider = {
        k: torch.zeros([d * 2 if d > 3 else d for d in v.shape], dtype=torch.float16) for k, v in ldm_tensors.items()
    }
    path = tmp_path / "wide.safetensors"
    save_file(wider, str(path))
    with pytest.raises(VaeMismatch, match=r"does not fit this checkpoint: \d+ weights have other shapes: decoder\."):
        load_vae_file(path, like=pipe.vae)


def test_extra_blocks_are_a_mismatch(tmp_path: Path, ldm_tensors, pipe) -> None:
    """diffusers' converter silently drops keys it has no name for; they must not pass unnoticed."""
    extra = {
        k.replace("encoder.down.3.", "encoder.down.4."): v.clone()
        for k, v in ldm_tensors.items()
        if k.startswith("encoder.down.3.")
    }
    path = tmp_path / "five-blocks.safetensors"
    save_file({**ldm_tensors, **extra}, str(path))
    with pytest.raises(VaeMismatch, match=r"unknown weights \(encoder\.down\.4\.block\.0\."):
        load_vae_file(path, like=pipe.vae)


def test_missing_weights_are_a_mismatch(tmp_path: Path, ldm_tensors, pipe) -> None:
    path = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in ldm_tensors.items() if "mid.attn_1" not in k}, str(path))
    with pytest.raises(VaeMismatch, match=r"weights missing \(decoder\.mid_block\.attentions\.0\."):
        load_vae_file(path, like=pipe.vae)


def test_non_vae_file_is_a_mismatch(tmp_path: Path, pipe) -> None:
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(path))
    with pytest.raises(VaeMismatch, match="no VAE encoder/decoder weights"):
        load_vae_file(path, like=pipe.vae)


def test_corrupt_file_is_a_mismatch(tmp_path: Path, pipe) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(VaeMismatch, match="not a valid safetensors file"):
        load_vae_file(path, like=pipe.vae)


@pytest.mark.parametrize("name", ["vae.ckpt", "vae.pt", "vae.vae.pt", "vae.bin", "vae"])
def test_pickles_are_refused(tmp_path: Path, ldm_tensors, pipe, name: str) -> None:
    path = tmp_path / name
    torch.save(ldm_tensors, path)
    with pytest.raises(VaeMismatch, match=r"only \.safetensors files are accepted"):
        load_vae_file(path, like=pipe.vae)


def test_missing_file(tmp_path: Path, pipe) -> None:
    with pytest.raises(FileNotFoundError):
        load_vae_file(tmp_path / "absent.safetensors", like=pipe.vae)
