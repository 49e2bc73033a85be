"""SD 2.x and SDXL single-file checkpoints: detection, shipped configs, offline loading, prediction type.

Plain pytest, no Django: ``.venv/bin/python -m pytest tests/worker/test_model_families.py -p no:django -q``.
The full-size families are checked from their shipped config folders on the meta device and from
header-only files; the tiny twins (same structure, tiny widths) are written, loaded and run.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from inference.hashing import file_sha256
from runtime.checkpoints.loading import (
    ARCHITECTURES,
    UnsupportedCheckpoint,
    declared_prediction_type,
    detect_architecture,
    load_pipeline,
    materialize_config,
    read_safetensors_header,
    unet_predicts_v,
)
from runtime.tiny.families import (
    build_tiny_sd2_components,
    build_tiny_sdxl_components,
    ldm_shapes_for_architecture,
    sd2_components_to_ldm,
    sdxl_components_to_ldm,
    write_tiny_sd2_checkpoint,
    write_tiny_sdxl_checkpoint,
)

# Parameter counts of the official releases (stabilityai/stable-diffusion-2-1, stable-diffusion-xl-base-1.0).
OFFICIAL_PARAMETERS = {
    ("sd2", "unet"): 865_910_724,
    ("sd2", "vae"): 83_653_863,
    ("sd2", "text_encoder"): 340_387_840,  # OpenCLIP ViT-H text tower without its last block
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "vae"): 83_653_863,
    ("sdxl", "text_encoder"): 123_060_480,  # CLIP ViT-L
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP ViT-bigG with projection
}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("family-models")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("family-cache")


@pytest.fixture(scope="module")
def tiny_sd2_checkpoint(models_dir: Path) -> Path:
    return write_tiny_sd2_checkpoint(models_dir / "tiny-sd2.safetensors", seed=0)


@pytest.fixture(scope="module")
def tiny_sdxl_checkpoint(models_dir: Path) -> Path:
    return write_tiny_sdxl_checkpoint(models_dir / "tiny-sdxl.safetensors", seed=0)


@pytest.fixture(scope="module")
def tiny_sd2_pipeline(tiny_sd2_checkpoint: Path, cache_dir: Path):
    return load_pipeline(tiny_sd2_checkpoint, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def tiny_sdxl_pipeline(tiny_sdxl_checkpoint: Path, cache_dir: Path):
    return load_pipeline(tiny_sdxl_checkpoint, cache_dir=cache_dir)


def _write_header_only(path: Path, shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None) -> Path:
    """A safetensors header declaring ``shapes`` with no tensor data: enough for header-only detection."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def _generate(pipe) -> np.ndarray:
    image = pipe(
        "a lighthouse at dawn!!",
        negative_prompt="blurry",
        width=64,
        height=64,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(7),
    ).images[0]
    assert image.size == (64, 64)
    return np.asarray(image)


# --------------------------------------------------------------------------- shipped full-size configs


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_full_size_configs_build_on_meta_with_official_sizes(family: str) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_dir = ARCHITECTURES[family].config_dir
    with torch.device("meta"):
        modules = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_json_file(config_dir / "text_encoder" / "config.json")),
        }
        if family == "sdxl":
            modules["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_json_file(config_dir / "text_encoder_2" / "config.json")
            )
    for name, module in modules.items():
        assert {p.device.type for p in module.parameters()} == {"meta"}, name  # nothing allocated
        count = sum(p.numel() for p in module.parameters())
        official = OFFICIAL_PARAMETERS[(family, name)]
        assert abs(count - official) <= 0.01 * official, (name, count, official)


def test_sd2_config_is_the_768_v_model() -> None:
    config_dir = ARCHITECTURES["sd2"].config_dir
    unet = json.loads((config_dir / "unet" / "config.json").read_text())
    scheduler = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    text_encoder = json.loads((config_dir / "text_encoder" / "config.json").read_text())
    assert unet["attention_head_dim"] == [5, 10, 20, 20]
    assert unet["use_linear_projection"] is True and unet["cross_attention_dim"] == 1024
    assert unet["sample_size"] * 8 == ARCHITECTURES["sd2"].native_resolution == 768
    assert scheduler["prediction_type"] == "v_prediction"
    assert (text_encoder["hidden_size"], text_encoder["num_hidden_layers"], text_encoder["hidden_act"]) == (1024, 23, "gelu")


def test_sdxl_config_is_the_base_model() -> None:
    arch = ARCHITECTURES["sdxl"]
    index = json.loads((arch.config_dir / "model_index.json").read_text())
    unet = json.loads((arch.config_dir / "unet" / "config.json").read_text())
    vae = json.loads((arch.config_dir / "vae" / "config.json").read_text())
    assert index["_class_name"] == arch.pipeline_class == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert unet["cross_attention_dim"] == 768 + 1280
    assert unet["projection_class_embeddings_input_dim"] == 6 * 256 + 1280
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert vae["scaling_factor"] == 0.13025
    assert unet["sample_size"] * 8 == arch.native_resolution == 1024


@pytest.mark.parametrize("arch_name", sorted(ARCHITECTURES))
def test_signature_matches_shipped_config(arch_name: str) -> None:
    """The LDM shapes implied by each config folder match its own signature and no other."""
    shapes = ldm_shapes_for_architecture(arch_name)
    assert [a.name for a in ARCHITECTURES.values() if a.matches(shapes)] == [arch_name]
    arch = ARCHITECTURES[arch_name]
    for prefix in arch.required_prefixes:
        assert any(k.startswith(prefix) for k in shapes), prefix


@pytest.mark.parametrize("arch_name", ["sd2", "sdxl"])
def test_full_size_checkpoint_detected_from_header(arch_name: str, tmp_path: Path) -> None:
    path = _write_header_only(tmp_path / f"{arch_name}.safetensors", ldm_shapes_for_architecture(arch_name))
    assert detect_architecture(path) is ARCHITECTURES[arch_name]


def test_sdxl_tokenizers_materialize(cache_dir: Path) -> None:
    from transformers import CLIPTokenizer

    folder = materialize_config(ARCHITECTURES["sdxl"], cache_dir)
    for sub in ("tokenizer", "tokenizer_2"):
        assert (folder / sub / "vocab.json").is_file() and (folder / sub / "merges.txt").is_file()
    clip_l = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", local_files_only=True)
    open_clip = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer_2", local_files_only=True)
    prompt = "! !! !!!"
    # open_clip.tokenize("! !! !!!") -> 49406, 256, 748, 995, 49407, then 0 padding (diffusers#4153).
    assert open_clip(prompt, padding="max_length", max_length=8).input_ids == [49406, 256, 748, 995, 49407, 0, 0, 0]
    assert clip_l(prompt, padding="max_length", max_length=8).input_ids == [49406, 256, 748, 995, 49407, 49407, 49407, 49407]


# --------------------------------------------------------------------------- unsupported files


def _sd2_shapes() -> dict[str, tuple[int, ...]]:
    return ldm_shapes_for_architecture("sd2")


@pytest.mark.parametrize(
    ("edit", "hint"),
    [
        (lambda s: s.update({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}), r"2\.x.*9 input channels"),
        (lambda s: s.update({"model.diffusion_model.label_emb.0.0.weight": (1280, 1024)}), "unCLIP"),
        (lambda s: s.update({"model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1)}), r"2\.x"),
    ],
    ids=["sd2-inpainting", "sd2-unclip", "sd2-conv-proj"],
)
def test_sd2_variants_are_refused_clearly(edit, hint: str, tmp_path: Path) -> None:
    shapes = _sd2_shapes()
    edit(shapes)
    path = _write_header_only(tmp_path / "variant.safetensors", shapes)
    with pytest.raises(UnsupportedCheckpoint, match=hint) as info:
        detect_architecture(path)
    assert "unsupported model architecture" in str(info.value)
    assert "Stable Diffusion XL" in str(info.value)  # lists what is supported


def test_an_sdxl_refiner_of_another_shape_is_refused_clearly(tmp_path: Path) -> None:
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
        "conditioner.embedders.0.model.positional_embedding": (77, 1280),
        "conditioner.embedders.0.model.text_projection": (1280, 1280),
    }
    path = _write_header_only(tmp_path / "refiner.safetensors", shapes)
    with pytest.raises(UnsupportedCheckpoint, match="SDXL refiner"):
        detect_architecture(path)


def test_unknown_shapes_give_a_clear_error(tmp_path: Path) -> None:
    path = _write_header_only(tmp_path / "odd.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": (256, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (256, 512),
        "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
    })
    with pytest.raises(UnsupportedCheckpoint) as info:
        detect_architecture(path)
    message = str(info.value)
    assert message.startswith("odd.safetensors: unsupported model architecture")
    assert "(256, 4, 3, 3)" in message and "(256, 512)" in message
    for arch in ARCHITECTURES.values():
        assert arch.title in message


def test_sd2_unet_without_openclip_text_encoder_is_refused(tmp_path: Path) -> None:
    shapes = {k: v for k, v in _sd2_shapes().items() if not k.startswith("cond_stage_model.")}
    shapes["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = (77, 768)
    path = _write_header_only(tmp_path / "hybrid.safetensors", shapes)
    with pytest.raises(UnsupportedCheckpoint, match=r"Stable Diffusion 2\.x checkpoint without the components cond_stage_model\.model\.\*"):
        detect_architecture(path)


def test_sdxl_without_second_text_encoder_is_refused(tmp_path: Path) -> None:
    shapes = {k: v for k, v in ldm_shapes_for_architecture("sdxl").items() if not k.startswith("conditioner.embedders.1.")}
    path = _write_header_only(tmp_path / "xl-no-te2.safetensors", shapes)
    with pytest.raises(UnsupportedCheckpoint, match=r"conditioner\.embedders\.1\.model\.\*"):
        detect_architecture(path)


# --------------------------------------------------------------------------- tiny checkpoints


def test_tiny_checkpoints_are_detected(tiny_sd2_checkpoint: Path, tiny_sdxl_checkpoint: Path) -> None:
    assert detect_architecture(tiny_sd2_checkpoint) is ARCHITECTURES["tiny-sd2"]
    assert detect_architecture(tiny_sdxl_checkpoint) is ARCHITECTURES["tiny-sdxl"]
    sd2_shapes, _ = read_safetensors_header(tiny_sd2_checkpoint)
    # Stored as OpenCLIP stores it: fused q/k/v, one block more than the diffusers text encoder uses.
    assert sd2_shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (192, 64)
    assert "cond_stage_model.model.transformer.resblocks.2.mlp.c_proj.weight" in sd2_shapes
    assert sd2_shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (32, 32)
    xl_shapes, _ = read_safetensors_header(tiny_sdxl_checkpoint)
    assert xl_shapes["conditioner.embedders.1.model.text_projection"] == (64, 64)
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in xl_shapes
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in xl_shapes  # upsampler after attention
    assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight" in xl_shapes
    for path in (tiny_sd2_checkpoint, tiny_sdxl_checkpoint):
        assert path.stat().st_size < 32_000_000
    assert not [p for p in tiny_sd2_checkpoint.parent.iterdir() if p.name.startswith(".")]  # no temp files


@pytest.mark.parametrize("writer", [write_tiny_sd2_checkpoint, write_tiny_sdxl_checkpoint])
def test_tiny_checkpoints_are_deterministic(writer, tmp_path: Path) -> None:
    first = writer(tmp_path / "a.safetensors", seed=3)
    again = writer(tmp_path / "b.safetensors", seed=3)
    other = writer(tmp_path / "c.safetensors", seed=4)
    assert file_sha256(first) == file_sha256(again) != file_sha256(other)


def test_ldm_conversion_covers_every_tensor() -> None:
    sd2 = build_tiny_sd2_components(seed=0)
    tensors = sd2_components_to_ldm(sd2)
    tower_extra = 1  # the OpenCLIP tower's logit_scale; q/k/v fuse 6 tensors into 2 per block
    blocks = sd2["text_tower"].config.num_hidden_layers
    expected = sum(len(sd2[n].state_dict()) for n in ("unet", "vae", "text_tower")) - 4 * blocks + tower_extra
    assert len(tensors) == expected
    xl = build_tiny_sdxl_components(seed=0)
    tensors = sdxl_components_to_ldm(xl)
    blocks = xl["text_encoder_2"].config.num_hidden_layers
    assert len(tensors) == sum(len(m.state_dict()) for m in xl.values()) - 4 * blocks + 1


def test_tiny_sd2_loads_as_v_prediction_sd_pipeline(tiny_sd2_pipeline) -> None:
    pipe = tiny_sd2_pipeline
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.unet.config.use_linear_projection is True and pipe.unet.config.upcast_attention is True
    assert pipe.text_encoder.config.num_hidden_layers == 2
    assert pipe.vae_scale_factor == 8
    assert pipe.tokenizer("fire!!").input_ids == [49406, 1769, 748, 49407]
    assert pipe.tokenizer.pad_token_id == 0


def test_tiny_sdxl_loads_as_sdxl_pipeline(tiny_sdxl_pipeline) -> None:
    pipe = tiny_sdxl_pipeline
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.watermark is None
    assert pipe.tokenizer.pad_token_id == 49407 and pipe.tokenizer_2.pad_token_id == 0
    assert pipe.vae_scale_factor == 8


@pytest.mark.parametrize(
    ("builder", "pipeline_fixture"),
    [(build_tiny_sd2_components, "tiny_sd2_pipeline"), (build_tiny_sdxl_components, "tiny_sdxl_pipeline")],
    ids=["tiny-sd2", "tiny-sdxl"],
)
def test_tiny_round_trip(builder, pipeline_fixture: str, request: pytest.FixtureRequest) -> None:
    """Loading the written file gives back exactly the weights that were built."""
    pipe = request.getfixturevalue(pipeline_fixture)
    for name, module in builder(seed=0).items():
        if name == "text_tower":
            continue  # stored in the file; diffusers keeps all but its last block (compared as text_encoder)
        expected = module.state_dict()
        loaded = getattr(pipe, name).state_dict()
        assert set(loaded) == set(expected), name
        for key, tensor in expected.items():
            assert loaded[key].dtype == torch.float32, (name, key)
            assert torch.equal(loaded[key], tensor), (name, key)


def test_tiny_sd2_generates(tiny_sd2_pipeline) -> None:
    assert _generate(tiny_sd2_pipeline).shape == (64, 64, 3)


def test_tiny_sdxl_generates(tiny_sdxl_pipeline) -> None:
    assert _generate(tiny_sdxl_pipeline).shape == (64, 64, 3)


# --------------------------------------------------------------------------- prediction type


def _tiny_sd2_header(tmp_path: Path, name: str, metadata: Mapping[str, str] | None = None) -> Path:
    return _write_header_only(tmp_path / name, ldm_shapes_for_architecture("tiny-sd2"), metadata)


def test_declared_prediction_type_sources(tmp_path: Path) -> None:
    plain = _tiny_sd2_header(tmp_path, "plain.safetensors")
    assert declared_prediction_type(plain) is None

    spec_eps = _tiny_sd2_header(tmp_path, "spec-eps.safetensors", {"modelspec.prediction_type": "epsilon"})
    assert declared_prediction_type(spec_eps) == ("epsilon", "modelspec.prediction_type metadata")
    spec_v = _tiny_sd2_header(tmp_path, "spec-v.safetensors", {"modelspec.prediction_type": "v"})
    assert declared_prediction_type(spec_v)[0] == "v_prediction"
    arch_768 = _tiny_sd2_header(tmp_path, "arch-768.safetensors", {"modelspec.architecture": "stable-diffusion-v2-768-v"})
    assert declared_prediction_type(arch_768)[0] == "v_prediction"
    arch_512 = _tiny_sd2_header(tmp_path, "arch-512.safetensors", {"modelspec.architecture": "stable-diffusion-v2-512"})
    assert declared_prediction_type(arch_512)[0] == "epsilon"

    marked = _write_header_only(tmp_path / "vpred-xl.safetensors", {**ldm_shapes_for_architecture("tiny-sdxl"), "v_pred": ()})
    assert declared_prediction_type(marked) == ("v_prediction", "v_pred marker tensor")

    # A1111's companion LDM config wins over everything in the file.
    (tmp_path / "spec-eps.yaml").write_text('model:\n  params:\n    parameterization: "v"\n    linear_start: 0.00085\n')
    assert declared_prediction_type(spec_eps) == ("v_prediction", "companion config spec-eps.yaml")
    (tmp_path / "plain.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert declared_prediction_type(plain) == ("epsilon", "companion config plain.yaml")


def test_declared_epsilon_and_caller_override_reach_the_scheduler(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "tiny-sd2-512-base.safetensors"
    save_file(
        sd2_components_to_ldm(build_tiny_sd2_components(seed=0)),
        str(path),
        metadata={"modelspec.prediction_type": "epsilon"},
    )
    pipe = load_pipeline(path, cache_dir=cache_dir)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert ARCHITECTURES["tiny-sd2"].resolution_for("epsilon") == 512
    assert ARCHITECTURES["tiny-sd2"].resolution_for("v_prediction") == 768
    assert _generate(pipe).shape == (64, 64, 3)

    overridden = load_pipeline(path, cache_dir=cache_dir, prediction_type="v")
    assert overridden.scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        load_pipeline(path, cache_dir=cache_dir, prediction_type="sample")


def test_unet_probe_decision() -> None:
    """A1111's probe: mean(UNet(0.5, t=999) - 0.5) below -1 means v-prediction."""
    unet = build_tiny_sd2_components(seed=0)["unet"]
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(-2.0)  # a v model's answer on pure noise: about minus the image
        assert unet_predicts_v(unet) is True
        unet.conv_out.bias.fill_(0.5)  # an epsilon model's answer: about the input itself
        assert unet_predicts_v(unet) is False
    assert ARCHITECTURES["sd2"].probe_v_prediction and not ARCHITECTURES["tiny-sd2"].probe_v_prediction


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_the_worker_runtime_generates_with_each_family(tmp_path, family) -> None:
    """txt2img and img2img through WorkerRuntime (the path jobs take), on the tiny variants."""
    import numpy as np
    from PIL import Image

    from a1111.samplers import resolve_sampler
    from runtime.tiny import families as tiny_families
    from runtime.engine import WorkerRuntime
    from runtime.specs import GenerationSpec, Img2ImgInputs

    writer = {"sd2": tiny_families.write_tiny_sd2_checkpoint, "sdxl": tiny_families.write_tiny_sdxl_checkpoint}[family]
    checkpoint = writer(tmp_path / f"{family}.safetensors")
    runtime = WorkerRuntime(device="cpu", cache_size=1, config_cache_dir=tmp_path / "cache")
    choice = resolve_sampler("Euler")
    spec = GenerationSpec(
        checkpoint_path=str(checkpoint), checkpoint_sha256=family, prompts=["a (red:1.2) boat"], negative_prompts=[""],
        seeds=[3], steps=2, cfg_scale=7.0, width=64, height=64, max_batch=8,
        scheduler_class=choice.scheduler_class, scheduler_kwargs=choice.scheduler_kwargs,
    )
    image = runtime.generate(spec)[0]
    assert image.size == (64, 64) and np.asarray(image).std() > 0
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    img2img = Img2ImgInputs(init_images=[init], masks=[None], denoising_strength=0.5)
    assert runtime.generate(dataclasses.replace(spec, img2img=img2img))[0].size == (64, 64)
