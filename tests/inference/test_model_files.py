"""`inference/model_files.py`: what a model file is (from its header only) and which files the
platform refuses to list or load: fake `.safetensors`, and pickles unless allowed for their kind."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from a1111.errors import InvalidField
from inference.model_files import (
    MAX_HEADER_BYTES,
    model_file_check,
    model_file_info,
    model_name_check,
    read_safetensors_header,
)
from tests.safetensors_files import safetensors_bytes, write_safetensors

UNET_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def _checkpoint(path: Path, text_encoder_key: str | None, context: int) -> Path:
    tensors = {UNET_K: ("U8", (4, context)), "first_stage_model.decoder.conv_in.weight": ("U8", (2,))}
    if text_encoder_key:
        tensors[text_encoder_key] = ("U8", (2,))
    return write_safetensors(path, tensors)


def test_the_tiny_checkpoint_is_an_sd1_safetensors_file(tiny_checkpoint_path) -> None:
    info = model_file_info(tiny_checkpoint_path, with_hash=False)
    assert (info.format, info.architecture, info.architecture_title) == ("safetensors", "sd1", "SD 1.x")
    assert info.size == tiny_checkpoint_path.stat().st_size and info.tensors > 100
    model_file_check(tiny_checkpoint_path, "Stable-diffusion")


@pytest.mark.django_db
def test_the_hash_is_the_registrys_cached_one(tmp_path) -> None:
    from inference.models import ModelFileHash

    path = write_safetensors(tmp_path / "m.safetensors", {"x": ("F32", (3,))})
    info = model_file_info(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ModelFileHash.objects.get(path=str(path.resolve())).sha256 == info.sha256


@pytest.mark.parametrize(
    ("text_encoder_key", "context", "expected"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 768, "sd1"),
        ("cond_stage_model.model.token_embedding.weight", 1024, "sd2"),
        ("conditioner.embedders.1.model.token_embedding.weight", 2048, "sdxl"),
        ("conditioner.embedders.0.model.token_embedding.weight", 1280, "sdxl-refiner"),
        (None, 768, "sd1"),  # no text encoder in the file: the UNet's context width says it
        (None, 1024, "sd2"),
        (None, 2048, "sdxl"),
        (None, 77, "unknown"),
    ],
)
def test_checkpoint_families_from_tensor_names_and_shapes(tmp_path, text_encoder_key, context, expected) -> None:
    path = _checkpoint(tmp_path / "c.safetensors", text_encoder_key, context)
    assert model_file_info(path, with_hash=False).architecture == expected


@pytest.mark.parametrize(
    ("tensors", "architecture", "base"),
    [
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": ("F16", (4, 768)),
          "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": ("F16", (320, 4))},
         "lora", "sd1"),
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": ("F16", (4, 1024))},
         "lora", "sd2"),
        ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": ("F16", (4, 8)),
          "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": ("F16", (4, 8))}, "lora", "sdxl"),
        ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": ("F16", (4, 2048))},
         "lora", "sdxl"),
        ({"encoder.conv_in.weight": ("F16", (8, 3, 3, 3)), "decoder.conv_out.weight": ("F16", (3, 8, 3, 3)),
          "quant_conv.weight": ("F16", (8, 8, 1, 1))}, "vae", ""),
        ({"control_model.input_hint_block.0.weight": ("F16", (16, 3, 3, 3)),
          "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": ("F16", (4, 768))}, "controlnet", "sd1"),
        ({"conv_first.weight": ("F16", (8, 3, 3, 3)), "body.0.rdb1.conv1.weight": ("F16", (8, 8, 3, 3)),
          "conv_last.weight": ("F16", (3, 8, 3, 3))}, "upscaler", ""),
        ({"emb_params": ("F32", (2, 768))}, "embedding", "sd1"),
        ({"clip_l": ("F32", (2, 768)), "clip_g": ("F32", (2, 1280))}, "embedding", "sdxl"),
        ({"something.else": ("F32", (2,))}, "unknown", ""),
    ],
)
def test_other_model_kinds_and_their_base(tmp_path, tensors, architecture, base) -> None:
    info = model_file_info(write_safetensors(tmp_path / "m.safetensors", tensors), with_hash=False)
    assert (info.architecture, info.base) == (architecture, base)


def test_a_file_written_by_the_safetensors_package_passes_and_keeps_its_metadata(tmp_path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "real.safetensors"
    save_file({"a": np.zeros((2, 3), np.float16), "b": np.ones(5, np.int64), "empty": np.zeros((0, 4), np.float32)},
              str(path), metadata={"ss_base_model_version": "sd_v1"})
    model_file_check(path, "Lora")
    header = read_safetensors_header(path)
    assert header.shapes == {"a": (2, 3), "b": (5,), "empty": (0, 4)}
    assert header.metadata == {"ss_base_model_version": "sd_v1"}


def _with_header(header: dict | bytes, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


FAKES = {
    "empty": (b"", "shorter than the 8-byte"),
    "a pickle renamed": (pickle.dumps({"w": [1.0, 2.0]}), "header"),
    "a png renamed": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "header"),
    "length past the end": (_with_header({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0", length=10_000),
                            "does not fit the file"),
    "header over 100 MB": (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "at most"),
    "header not JSON": (_with_header(b"{not json at all}"), "not JSON"),
    "header a JSON list": (_with_header(b"[1, 2, 3]"), "not a JSON object"),
    "offsets past the end": (_with_header({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
                             "past the end"),
    "overlapping tensors": (_with_header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                          "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
                            "overlap"),
    "offsets reversed": (_with_header({"x": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, b"\0" * 4),
                         "data_offsets"),
    "size not the shape's": (_with_header({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
                             "does not match"),
    "unknown dtype": (_with_header({"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "unknown dtype"),
    "no shape": (_with_header({"x": {"dtype": "U8", "data_offsets": [0, 1]}}, b"\0"), "no valid shape"),
    "bad metadata": (_with_header({"__metadata__": [1]}), "__metadata__"),
}


@pytest.mark.parametrize("case", FAKES)
def test_a_file_that_claims_to_be_safetensors_but_is_not_is_refused_saying_why(tmp_path, case) -> None:
    content, why = FAKES[case]
    path = tmp_path / "fake.safetensors"
    path.write_bytes(content)
    with pytest.raises(InvalidField, match="not a valid safetensors file") as refused:
        model_file_check(path, "Stable-diffusion")
    assert why in refused.value.message and refused.value.field == "file"
    with pytest.raises(InvalidField):
        model_file_info(path, with_hash=False)


def test_only_the_header_is_read(tmp_path) -> None:
    """A 64 GiB file (sparse: its data was never written) is checked and described from its header."""
    path = tmp_path / "huge.safetensors"
    path.write_bytes(safetensors_bytes({UNET_K: ("U8", (4, 1024)), "cond_stage_model.model.x": ("U8", (1,))}))
    with open(path, "r+b") as handle:
        handle.truncate(64 * 1024**3)
    model_file_check(path, "Stable-diffusion")
    info = model_file_info(path, with_hash=False)
    assert (info.architecture, info.size) == ("sd2", 64 * 1024**3)


def test_the_parse_is_remembered_until_the_file_changes(tmp_path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {"x": ("U8", (1,))})
    assert read_safetensors_header(path) is read_safetensors_header(path)
    path.write_bytes(b"garbage!" * 4)
    os.utime(path, ns=(1, 1))  # a different mtime, as any rewrite has
    with pytest.raises(InvalidField):
        model_file_check(path)
    write_safetensors(path, {"y": ("U8", (2,))})
    assert read_safetensors_header(path).shapes == {"y": (2,)}


# --- pickles ---------------------------------------------------------------------------------


def _torch_save(path: Path, state: object) -> Path:
    import torch

    torch.save(state, path)
    return path


class _Exploit:
    """A pickle that, when loaded, creates a file (what a malicious .pt would do)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth", ".pkl"])
@pytest.mark.parametrize("kind", ["Stable-diffusion", "Lora", "embeddings", "hypernetworks", "VAE", "promptgen"])
def test_pickles_are_refused_by_default_with_a_message_saying_to_convert(tmp_path, settings, suffix, kind) -> None:
    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    path = _torch_save(tmp_path / f"model{suffix}", {"w": __import__("torch").zeros(2)})
    for check in (lambda: model_file_check(path, kind), lambda: model_name_check(path.name, kind)):
        with pytest.raises(InvalidField, match="convert it to .safetensors") as refused:
            check()
        assert "ATELIER_ALLOW_PICKLED_MODELS" in refused.value.message
    model_name_check("model.safetensors", kind)


@pytest.mark.parametrize("kind", ["ESRGAN", "GFPGAN", "Codeformer"])
def test_upscaler_and_face_model_pickles_stay_allowed_weights_only(tmp_path, settings, kind) -> None:
    import torch

    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    path = _torch_save(tmp_path / "RealESRGAN_x4plus.pth", {"params_ema": {"conv_first.weight": torch.zeros(2, 3)}})
    model_name_check(path.name, kind)
    model_file_check(path, kind)


def test_an_allowed_pickle_of_tensors_and_plain_data_passes(tmp_path, settings) -> None:
    import torch

    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    # an A1111 hypernetwork's layout: plain data and tensors, an OrderedDict, a bfloat16 and a Parameter
    state = {
        "name": "style", "layer_structure": [1, 2, 1], "activation_func": "linear", "step": 3,
        768: [{"linear.0.weight": torch.zeros(4, 4, dtype=torch.bfloat16)}],
        "sd_checkpoint": None, "extra": __import__("collections").OrderedDict(a=torch.nn.Parameter(torch.ones(2))),
    }
    model_file_check(_torch_save(tmp_path / "h.pt", state), "hypernetworks")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    model_file_check(legacy, "embeddings")


@pytest.mark.parametrize("zipped", [True, False])
def test_a_malicious_pickle_is_refused_even_when_pickles_are_allowed_and_never_runs(tmp_path, settings, zipped) -> None:
    import torch

    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if zipped:
        torch.save({"w": torch.zeros(2), "payload": _Exploit(target)}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": _Exploit(target)}, protocol=4))
    for kind in ("embeddings", "ESRGAN"):
        with pytest.raises(InvalidField, match="system") as refused:
            model_file_check(path, kind)
        assert "could run code" in refused.value.message
    assert not target.exists()


def test_a_global_named_through_the_memo_is_still_seen(tmp_path, settings) -> None:
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    # protocol 4 writes STACK_GLOBAL; here the module name comes back from the memo, not as text
    payload = b"\x80\x04" + b"\x8c\x02os" + b"\x94" + b"h\x00" + b"\x8c\x06system\x93" + b"\x8c\x02id\x85R."
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(InvalidField, match="os.system"):
        model_file_check(path, "embeddings")


def test_not_a_model_format_and_junk_pickles_are_refused(tmp_path, settings) -> None:
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidField, match="not a model file format"):
        model_file_check(tmp_path / "notes.txt", "Lora")
    (tmp_path / "junk.pt").write_bytes(b"\xff\xfe not a pickle")
    with pytest.raises(InvalidField, match="not a readable pickle"):
        model_file_check(tmp_path / "junk.pt", "embeddings")


# --- diffusers folders --------------------------------------------------------------------------


def _diffusers_folder(root: Path, class_name: str, cross_attention_dim: int) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name, "text_encoder": ["transformers", "CLIPTextModel"]}))
    (root / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim}))
    write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", {"x": ("F16", (4,))})
    return root


@pytest.mark.parametrize(("class_name", "dim", "expected"), [
    ("StableDiffusionPipeline", 768, "sd1"), ("StableDiffusionPipeline", 1024, "sd2"),
    ("StableDiffusionXLPipeline", 2048, "sdxl"),
])
def test_diffusers_folders_are_described_and_checked(tmp_path, settings, class_name, dim, expected) -> None:
    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    folder = _diffusers_folder(tmp_path / "model", class_name, dim)
    info = model_file_info(folder)
    assert (info.format, info.architecture, info.sha256) == ("diffusers-folder", expected, None)
    model_file_check(folder, "Stable-diffusion")
    _torch_save(folder / "unet" / "extra.bin", {"w": __import__("torch").zeros(1)})  # beside safetensors: unused
    model_file_check(folder, "Stable-diffusion")
    (folder / "vae").mkdir()
    _torch_save(folder / "vae" / "diffusion_pytorch_model.bin", {"w": __import__("torch").zeros(1)})
    with pytest.raises(InvalidField, match="pickled"):
        model_file_check(folder, "Stable-diffusion")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"fake")
    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    with pytest.raises(InvalidField, match="not a valid safetensors"):
        model_file_check(folder, "Stable-diffusion")


# --- what uploads and the FileBrowser call ------------------------------------------------------


@pytest.mark.parametrize(("area", "relative", "kind"), [
    ("home", "models/Lora/styles/ink.safetensors", "Lora"), ("team", "models/Stable-diffusion/x.ckpt", "Stable-diffusion"),
    ("public", "VAE/x.pt", "VAE"), ("home", "outputs/x.ckpt", None), ("home", "models/Lora", None),
    ("home", "models/NotAKind/x.pt", None), ("public", "ESRGAN/4x.pth", "ESRGAN"),
])
def test_the_model_kind_of_a_filebrowser_place(area, relative, kind) -> None:
    from inference.model_files import model_kind_for

    assert model_kind_for(area, relative) == kind


def test_an_upload_into_a_model_folder_is_checked_by_name_then_by_content(tmp_path, settings) -> None:
    from inference.model_files import model_file_problem, model_upload_check

    settings.ATELIER_ALLOW_PICKLED_MODELS = False
    with pytest.raises(InvalidField, match="convert it to .safetensors"):
        model_upload_check("home", "models/Stable-diffusion/old.ckpt")
    model_upload_check("home", "outputs/old.ckpt")  # not a model folder: not a model
    model_upload_check("public", "ESRGAN/4x.pth")
    model_upload_check("home", "models/Lora/ink.safetensors")  # the name is fine; the bytes come later
    received = tmp_path / "upload-part-0001"
    received.write_bytes(b"<!doctype html> a login page saved as a model")
    with pytest.raises(InvalidField, match="ink.safetensors is not a valid safetensors file"):
        model_upload_check("home", "models/Lora/ink.safetensors", received)
    assert "not a valid safetensors file" in model_file_problem(received.rename(tmp_path / "ink.safetensors"), "Lora")
    good = write_safetensors(tmp_path / "good.safetensors", {"x": ("U8", (1,))})
    model_upload_check("home", "models/Lora/ink.safetensors", good)
    assert model_file_problem(good, "Lora") == ""


def test_an_allowed_pickle_upload_is_still_refused_when_its_pickle_would_run_code(tmp_path, settings) -> None:
    from inference.model_files import model_upload_check

    settings.ATELIER_ALLOW_PICKLED_MODELS = True
    target = tmp_path / "pwned"
    received = tmp_path / "upload-part"
    received.write_bytes(pickle.dumps({"x": _Exploit(target)}))
    model_upload_check("home", "models/embeddings/style.pt")
    with pytest.raises(InvalidField, match="style.pt is refused: its pickle would call posix.system"):
        model_upload_check("home", "models/embeddings/style.pt", received)
    assert not target.exists()
