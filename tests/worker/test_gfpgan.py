"""GFPGAN (clean): the real v1.3/v1.4 geometry, both file formats, the forward pass, and refused files."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from runtime.faces.gfpgan import (
    GFPGAN,
    FaceRestorerError,
    _config,
    load_gfpgan,
    standard_widths,
    write_tiny_gfpgan,
)
from runtime.upscalers import write_tiny_esrgan

# GFPGANv1Clean(out_size=512, channel_multiplier=2, narrow=1, num_style_feat=512, num_mlp=8, different_w=True,
# sft_half=True), counted layer by layer from upstream's channel tables (U-Net 256…32 wide, decoder 512…64):
# encoder 6,197,280 + upward ResBlocks 6,187,680 + toRGB 3,765 + final_linear 33,562,624 (4096 → 16 latents x 512)
# + SFT branches 10,216,320 + StyleGAN2 decoder 30,276,583 (style MLP 2,101,248 of it) = 86,444,252 parameters,
# plus 699,024 noise-map values: 87.1 M floats, the ~348 MB of GFPGANv1.4.pth.
GFPGAN_V14_PARAMETERS = 86_444_252
GFPGAN_V14_SHAPES = {
    "conv_body_first.weight": (32, 3, 1, 1),
    "conv_body_down.0.conv2.weight": (64, 32, 3, 3),
    "conv_body_down.6.skip.weight": (256, 256, 1, 1),
    "final_conv.weight": (256, 256, 3, 3),
    "final_linear.weight": (16 * 512, 256 * 4 * 4),
    "conv_body_up.6.conv2.weight": (32, 64, 3, 3),
    "toRGB.6.weight": (3, 32, 1, 1),
    "condition_scale.0.0.weight": (256, 256, 3, 3),
    "condition_shift.6.2.weight": (32, 32, 3, 3),
    "stylegan_decoder.style_mlp.15.weight": (512, 512),
    "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
    "stylegan_decoder.style_conv1.weight": (1,),
    "stylegan_decoder.style_conv1.bias": (1, 512, 1, 1),
    "stylegan_decoder.style_conv1.modulated_conv.weight": (1, 512, 512, 3, 3),
    "stylegan_decoder.style_conv1.modulated_conv.modulation.weight": (512, 512),
    "stylegan_decoder.to_rgb1.modulated_conv.weight": (1, 3, 512, 1, 1),
    "stylegan_decoder.style_convs.10.modulated_conv.weight": (1, 128, 256, 3, 3),
    "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),
    "stylegan_decoder.to_rgbs.6.bias": (1, 3, 1, 1),
    "stylegan_decoder.noises.noise0": (1, 1, 4, 4),
    "stylegan_decoder.noises.noise14": (1, 1, 512, 512),
}


def _full_size_model() -> GFPGAN:
    with torch.device("meta"):  # the real geometry without allocating 350 MB
        return GFPGAN(*standard_widths())


def test_the_full_size_model_has_gfpgan_v14s_tensors_and_parameter_count() -> None:
    model = _full_size_model()
    state = model.state_dict()
    assert model.face_size == 512
    assert sum(p.numel() for p in model.parameters()) == GFPGAN_V14_PARAMETERS
    assert len(state) == 285
    assert {key: tuple(state[key].shape) for key in GFPGAN_V14_SHAPES} == GFPGAN_V14_SHAPES
    assert sorted({key.split(".")[0] for key in state}) == [
        "condition_scale", "condition_shift", "conv_body_down", "conv_body_first", "conv_body_up",
        "final_conv", "final_linear", "stylegan_decoder", "toRGB",
    ]
    assert len([k for k in state if k.startswith("stylegan_decoder.noises.")]) == 15


def test_the_full_size_geometry_is_read_back_off_the_tensors() -> None:
    state = _full_size_model().state_dict()
    unet, decoder = standard_widths()
    assert _config("GFPGANv1.4.pth", state) == {
        "unet_channels": list(unet), "decoder_channels": list(decoder), "num_style_feat": 512, "num_mlp": 8,
        "different_w": True, "sft_half": True,
    }
    assert unet == (256, 256, 256, 256, 256, 128, 64, 32)
    assert decoder == (512, 512, 512, 512, 512, 256, 128, 64)


def test_a_params_ema_pth_round_trips_weights_only(tmp_path) -> None:
    path = write_tiny_gfpgan(tmp_path / "GFPGANv1.4.pth")
    assert path.stat().st_size < 400_000
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["params_ema"]
    model = load_gfpgan(path)
    assert model.face_size == 64 and not model.training
    loaded = model.state_dict()
    assert loaded.keys() == raw["params_ema"].keys()
    assert all(torch.equal(loaded[k], v) for k, v in raw["params_ema"].items())


def test_safetensors_and_pth_of_the_same_seed_restore_identically(tmp_path) -> None:
    pth = load_gfpgan(write_tiny_gfpgan(tmp_path / "a.pth", seed=5))
    safetensors = load_gfpgan(write_tiny_gfpgan(tmp_path / "a.safetensors", seed=5))
    other_seed = load_gfpgan(write_tiny_gfpgan(tmp_path / "b.pth", seed=6))
    faces = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(pth(faces), safetensors(faces))
        assert not torch.equal(pth(faces), other_seed(faces))


def test_the_forward_pass_keeps_shape_and_range_and_follows_the_face(tmp_path) -> None:
    model = load_gfpgan(write_tiny_gfpgan(tmp_path / "tiny.pth"))
    faces = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = model(faces)
        assert out.shape == faces.shape
        assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.1
        assert torch.equal(model(faces), out)  # stored noise maps: the same face restores the same way
        assert (model(faces.flip(-1)) - out).abs().mean() > 0.01  # the encoder steers the decoder
        alone = torch.cat([model(face[None]) for face in faces])
        torch.testing.assert_close(alone, out)  # per-sample modulation: batching changes nothing
        model.stylegan_decoder.noises.noise8.add_(1.0)
        assert not torch.equal(model(faces), out)  # … and those noise maps are used


def test_other_sizes_and_dtypes_load(tmp_path) -> None:
    model = load_gfpgan(write_tiny_gfpgan(tmp_path / "t128.pth", face_size=128), dtype=torch.float64)
    assert model.face_size == 128
    assert model(torch.zeros(1, 3, 128, 128, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\)"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.float64))


@pytest.mark.parametrize(("sft_half", "different_w"), [(False, True), (True, False)])
def test_variant_configurations_are_inferred(tmp_path, sft_half, different_w) -> None:
    torch.manual_seed(0)
    built = GFPGAN([4, 4, 4], [8, 8, 8], num_style_feat=8, num_mlp=1, sft_half=sft_half, different_w=different_w)
    save_file(built.state_dict(), str(tmp_path / "v.safetensors"))
    loaded = load_gfpgan(tmp_path / "v.safetensors")
    assert (loaded.stylegan_decoder.sft_half, loaded.different_w) == (sft_half, different_w)
    faces = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(faces), built.eval()(faces))


def _lookalike(tmp_path, name: str, keys: list[str]) -> str:
    save_file({key: torch.zeros(2) for key in keys}, str(tmp_path / name))
    with pytest.raises(FaceRestorerError) as caught:
        load_gfpgan(tmp_path / name)
    return str(caught.value)


def test_other_models_are_refused_saying_what_they_look_like(tmp_path) -> None:
    v1 = _lookalike(tmp_path, "GFPGANv1.safetensors", ["conv_body_first.0.weight", "conv_body_first.1.bias",
                                                       "stylegan_decoder.style_conv1.activate.bias"])
    assert "GFPGANv1.safetensors" in v1 and '"clean"' in v1 and "GFPGANv1.4.pth" in v1
    assert "CodeFormer" in _lookalike(tmp_path, "codeformer.safetensors", ["position_emb", "quantize.embedding.weight"])
    assert "RetinaFace" in _lookalike(tmp_path, "det.safetensors", ["ClassHead.0.conv1x1.weight"])
    assert "Stable Diffusion" in _lookalike(tmp_path, "sd.safetensors", ["model.diffusion_model.out.0.weight"])
    assert "not a GFPGAN" in _lookalike(tmp_path, "other.safetensors", ["weight"])
    with pytest.raises(FaceRestorerError, match="ESRGAN"):
        load_gfpgan(write_tiny_esrgan(tmp_path / "RealESRGAN_x4plus.pth"))


def test_broken_gfpgan_files_are_refused_with_a_reason(tmp_path) -> None:
    state = torch.load(write_tiny_gfpgan(tmp_path / "tiny.pth"), weights_only=True)["params_ema"]
    save_file({k: v for k, v in state.items() if k != "condition_scale.0.2.weight"}, str(tmp_path / "cut.safetensors"))
    with pytest.raises(FaceRestorerError, match="cut.safetensors.*condition_scale.0.2.weight"):
        load_gfpgan(tmp_path / "cut.safetensors")
    save_file({k: v for k, v in state.items() if k != "toRGB.0.bias"}, str(tmp_path / "gap.safetensors"))
    with pytest.raises(FaceRestorerError, match="does not fit.*lacks toRGB.0.bias"):
        load_gfpgan(tmp_path / "gap.safetensors")
    save_file({**state, "toRGB.0.bias": torch.zeros(5)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(FaceRestorerError, match="wrong shape for toRGB.0.bias"):
        load_gfpgan(tmp_path / "shape.safetensors")
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(FaceRestorerError, match="unexpected extra.weight"):
        load_gfpgan(tmp_path / "extra.safetensors")
    state["final_linear.weight"] = torch.zeros(7, state["final_linear.weight"].shape[1])
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(FaceRestorerError, match="final_linear gives 7 values"):
        load_gfpgan(tmp_path / "odd.safetensors")


def test_unreadable_files_and_pickles_with_code_are_refused(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(FaceRestorerError, match="junk.pth cannot be read as weights only"):
        load_gfpgan(tmp_path / "junk.pth")
    with open(tmp_path / "code.pth", "wb") as handle:  # a pickle that would run code: never unpickled
        pickle.dump({"params_ema": {"conv_body_first.weight": print}}, handle, protocol=2)
    with pytest.raises(FaceRestorerError, match="weights only"):
        load_gfpgan(tmp_path / "code.pth")
    torch.save({"params_ema": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(FaceRestorerError, match="no tensors by name"):
        load_gfpgan(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_gfpgan(tmp_path / "missing.pth")
