"""CodeFormer: the real file's key set and size, loading both file kinds, the forward pass, bad files."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from runtime.faces.codeformer import (
    CodeFormer,
    FaceRestorerError,
    load_codeformer,
    write_tiny_codeformer,
)
from runtime.upscalers import write_tiny_esrgan

# The parameter count of CodeFormer(dim_embd=512, n_head=8, n_layers=9, codebook_size=1024,
# connect_list=['32','64','128','256']) as sczhou/CodeFormer's own basicsr/archs/codeformer_arch.py
# builds it (the architecture A1111 loads codeformer-v0.1.0.pth into): that file was run once with
# stubbed basicsr imports and gave 94,112,707 parameters and 515 tensors, the same key set and shapes
# as this module's. The same weights loaded into both gave the same 512x512 restorations (to 2e-5)
# at w=0 and w=0.7 with adain=True.
REAL_PARAMETERS = 94_112_707
REAL_TENSORS = 515


@pytest.fixture(scope="module")
def real_size() -> CodeFormer:
    return CodeFormer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> CodeFormer:
    return load_codeformer(write_tiny_codeformer(tmp_path_factory.mktemp("cf") / "tiny.pth"))


def test_the_default_network_has_the_real_files_keys_shapes_and_size(real_size: CodeFormer) -> None:
    state = real_size.state_dict()
    assert real_size.face_size == 512
    assert len(state) == REAL_TENSORS
    assert sum(p.numel() for p in real_size.parameters()) == REAL_PARAMETERS
    expected = {
        "position_emb": (256, 512),
        "quantize.embedding.weight": (1024, 256),
        "feat_emb.weight": (512, 256),
        "idx_pred_layer.0.weight": (512,),
        "idx_pred_layer.1.weight": (1024, 512),
        "ft_layers.8.self_attn.in_proj_weight": (1536, 512),
        "ft_layers.8.self_attn.out_proj.weight": (512, 512),
        "ft_layers.0.linear1.weight": (1024, 512),
        "encoder.blocks.0.weight": (64, 3, 3, 3),
        "encoder.blocks.4.conv_out.weight": (128, 64, 1, 1),
        "encoder.blocks.17.q.weight": (512, 512, 1, 1),
        "encoder.blocks.24.weight": (256, 512, 3, 3),
        "generator.blocks.0.weight": (512, 256, 3, 3),
        "generator.blocks.8.conv.weight": (512, 512, 3, 3),
        "generator.blocks.24.weight": (3, 64, 3, 3),
        "fuse_convs_dict.32.encode_enc.conv_out.weight": (256, 512, 1, 1),
        "fuse_convs_dict.256.scale.0.weight": (128, 128, 3, 3),
        "fuse_convs_dict.256.shift.2.bias": (128,),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert {key.split(".")[1] for key in state if key.startswith("fuse_convs_dict.")} == {"32", "64", "128", "256"}
    assert "idx_pred_layer.1.bias" not in state and "ft_layers.9.linear1.weight" not in state


def test_a_file_with_the_real_key_set_loads_strictly_with_the_real_configuration(tmp_path, real_size) -> None:
    path = tmp_path / "codeformer-v0.1.0.safetensors"
    save_file({k: v.half() for k, v in real_size.state_dict().items()}, str(path))
    model = load_codeformer(path)
    assert model.face_size == 512
    assert sum(p.numel() for p in model.parameters()) == REAL_PARAMETERS
    assert torch.equal(model.position_emb, real_size.position_emb.half().float())


def test_a_params_ema_pth_round_trips_weights_only(tmp_path) -> None:
    path = write_tiny_codeformer(tmp_path / "codeformer.pth", seed=5)
    stored = torch.load(path, weights_only=True)
    assert set(stored) == {"params_ema"}
    model = load_codeformer(path)
    assert model.face_size == 64
    loaded = model.state_dict()
    assert set(loaded) == set(stored["params_ema"])
    assert all(torch.equal(loaded[key], value) for key, value in stored["params_ema"].items())
    assert {key.split(".")[1] for key in loaded if key.startswith("fuse_convs_dict.")} == {"4", "8", "16", "32"}
    assert tuple(loaded["position_emb"].shape) == (4, 32)  # a 2x2 latent grid: 64 / 32


def test_safetensors_holds_the_same_model_and_other_sizes_follow_the_file(tmp_path) -> None:
    pth = load_codeformer(write_tiny_codeformer(tmp_path / "a.pth", seed=2))
    safe = load_codeformer(write_tiny_codeformer(tmp_path / "a.safetensors", seed=2), dtype=torch.float64)
    assert next(safe.parameters()).dtype == torch.float64
    faces = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        assert torch.allclose(pth(faces), safe(faces.double()).float(), atol=1e-4)
    bigger = load_codeformer(write_tiny_codeformer(tmp_path / "b.safetensors", face_size=128))
    assert bigger.face_size == 128 and tuple(bigger.position_emb.shape) == (16, 32)
    with torch.inference_mode():
        assert bigger(torch.zeros(1, 3, 128, 128)).shape == (1, 3, 128, 128)


def test_the_forward_keeps_shape_is_deterministic_and_depends_on_input_and_fidelity(tiny) -> None:
    generator = torch.Generator().manual_seed(0)
    faces = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    with torch.inference_mode():
        out = tiny(faces, fidelity=0.5)
        assert out.shape == faces.shape and out.abs().max() <= 1.0
        assert torch.equal(out, tiny(faces, fidelity=0.5))
        assert torch.allclose(out[1:], tiny(faces[1:], fidelity=0.5), atol=1e-4)  # faces do not mix in a batch
        assert not torch.allclose(out[0], out[1])
        assert not torch.allclose(tiny(faces, fidelity=0.0), tiny(faces, fidelity=1.0))
    with pytest.raises(ValueError, match="shape"):
        tiny(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="fidelity"):
        tiny(faces, fidelity=1.5)


def test_fidelity_zero_ignores_the_fuse_blocks(tmp_path) -> None:
    model = load_codeformer(write_tiny_codeformer(tmp_path / "f.pth"))
    faces = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        before = model(faces, fidelity=0.0), model(faces, fidelity=1.0)
        for parameter in model.fuse_convs_dict.parameters():
            parameter.zero_()
        assert torch.equal(model(faces, fidelity=0.0), before[0])
        assert not torch.equal(model(faces, fidelity=1.0), before[1])


def test_files_that_are_not_codeformer_weights_are_refused_with_a_reason(tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(FaceRestorerError, match="junk.pth"):
        load_codeformer(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(FaceRestorerError, match="safetensors"):
        load_codeformer(tmp_path / "junk.safetensors")
    with open(tmp_path / "code.pth", "wb") as handle:  # a pickle that would run code: never unpickled
        pickle.dump({"params_ema": {"position_emb": print}}, handle, protocol=2)
    with pytest.raises(FaceRestorerError, match="weights only"):
        load_codeformer(tmp_path / "code.pth")
    with pytest.raises(FaceRestorerError, match="ESRGAN"):
        load_codeformer(write_tiny_esrgan(tmp_path / "RealESRGAN_x4plus.pth"))
    gfpgan = {"conv_body_first.weight": torch.zeros(32, 3, 1, 1), "stylegan_decoder.style_mlp.1.weight": torch.eye(8)}
    torch.save({"params_ema": gfpgan}, tmp_path / "GFPGANv1.4.pth")
    with pytest.raises(FaceRestorerError, match="GFPGAN"):
        load_codeformer(tmp_path / "GFPGANv1.4.pth")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FaceRestorerError, match="not a CodeFormer model"):
        load_codeformer(tmp_path / "other.safetensors")


def test_a_codeformer_file_with_missing_or_misshapen_tensors_is_refused(tmp_path) -> None:
    state = torch.load(write_tiny_codeformer(tmp_path / "t.pth"), weights_only=True)["params_ema"]
    del state["generator.blocks.1.conv2.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(FaceRestorerError, match="does not fit the CodeFormer architecture"):
        load_codeformer(tmp_path / "missing.safetensors")
    state = torch.load(tmp_path / "t.pth", weights_only=True)["params_ema"]
    state["position_emb"] = torch.zeros(5, 32)
    save_file(state, str(tmp_path / "grid.safetensors"))
    with pytest.raises(FaceRestorerError, match="square latent grid"):
        load_codeformer(tmp_path / "grid.safetensors")
