"""Tests for applying A1111-style LoRA files to a cached pipeline per batch (runtime.networks.lora).

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_lora.py -q``. Images come
from the tiny random-weight model at 64x64, 4 steps, fixed seed, through a fresh
``StableDiffusionPipeline`` over the cached modules, as the worker runtime builds one per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from runtime.checkpoints.loading import load_pipeline
from runtime.networks.lora import LoraMismatch, LoraSet, adapter_name_for
from runtime.specs import LoraSpec
from runtime.tiny.lora import write_tiny_lora, write_tiny_sdxl_style_lora
from runtime.tiny.model import write_tiny_checkpoint

CLEARLY_DIFFERENT = 2.0  # mean absolute difference, in 0..255 levels


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """The tiny model is far faster on one thread: on a busy machine, torch's thread pool mostly spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "m.safetensors")


@pytest.fixture(scope="module")
def load(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], DiffusionPipeline]:
    """Loads a fresh cached pipeline (its own modules, no adapters)."""
    cache_dir = tmp_path_factory.mktemp("cfg")
    return lambda: load_pipeline(checkpoint, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def pipe(load: Callable[[], DiffusionPipeline]) -> DiffusionPipeline:
    """The cached pipeline shared by the image tests, with its one LoraSet (`lora_set`)."""
    return load()


@pytest.fixture(scope="module")
def lora_set() -> LoraSet:
    return LoraSet()


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        "a": write_tiny_lora(folder / "a.safetensors", seed=0),
        "b": write_tiny_lora(folder / "b.safetensors", seed=1),
        "c": write_tiny_lora(folder / "c.safetensors", seed=2),
        "te_only": write_tiny_lora(folder / "te_only.safetensors", seed=3, unet=False),
        "sdxl": write_tiny_sdxl_style_lora(folder / "sdxl.safetensors"),
    }


def spec(path: Path, te_weight: float = 1.0, unet_weight: float = 1.0) -> LoraSpec:
    return LoraSpec(path=str(path), sha256=f"sha-{path.stem}", te_weight=te_weight, unet_weight=unet_weight)


def txt2img(cached: DiffusionPipeline) -> np.ndarray:
    """One 64x64 image, as the runtime makes it: a new pipeline object over the cached modules."""
    sd = StableDiffusionPipeline(**cached.components, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(7)
    with torch.inference_mode():
        out = sd("a red fox in the snow", height=64, width=64, num_inference_steps=4, generator=generator, output_type="np")
    return np.round(out.images[0] * 255).astype(np.int16)


def with_loras(cached: DiffusionPipeline, lora_set: LoraSet, specs: list[LoraSpec]) -> np.ndarray:
    with lora_set.applied(cached, specs):
        return txt2img(cached)


def mean_diff(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x - y).mean())


def active_adapters(cached: DiffusionPipeline) -> set[str]:
    return {
        name
        for module in (cached.unet, cached.text_encoder)
        for layer in module.modules()
        if isinstance(layer, LoraLayer)
        for name in layer.active_adapters
    }


def cached_adapters(cached: DiffusionPipeline) -> set[str]:
    return {name for names in cached.get_list_adapters().values() for name in names}


@pytest.fixture(scope="module")
def plain(pipe: DiffusionPipeline) -> np.ndarray:
    return txt2img(pipe)  # before any LoRA was loaded into the modules


@pytest.fixture(scope="module")
def with_a(pipe: DiffusionPipeline, lora_set: LoraSet, loras: dict[str, Path], plain: np.ndarray) -> np.ndarray:
    return with_loras(pipe, lora_set, [spec(loras["a"])])


# --------------------------------------------------------------------------- weights


def test_weight_zero_gives_the_image_without_the_lora(pipe, lora_set, loras, plain, with_a) -> None:
    image = with_loras(pipe, lora_set, [spec(loras["a"], te_weight=0.0, unet_weight=0.0)])
    assert "sha-a" in lora_set.loaded()  # the adapter is in the modules, just not applied
    assert np.array_equal(image, plain)  # zero-weight adapters are left out, not multiplied by 0


def test_weight_one_changes_the_image_and_half_lies_between(pipe, lora_set, loras, plain, with_a) -> None:
    half = with_loras(pipe, lora_set, [spec(loras["a"], te_weight=0.5, unet_weight=0.5)])
    assert mean_diff(with_a, plain) > CLEARLY_DIFFERENT
    assert mean_diff(half, plain) > CLEARLY_DIFFERENT
    assert mean_diff(half, with_a) > CLEARLY_DIFFERENT


def test_text_encoder_and_unet_weights_each_change_the_image(pipe, lora_set, loras, plain, with_a) -> None:
    te_only = with_loras(pipe, lora_set, [spec(loras["a"], te_weight=1.0, unet_weight=0.0)])
    unet_only = with_loras(pipe, lora_set, [spec(loras["a"], te_weight=0.0, unet_weight=1.0)])
    for image in (te_only, unet_only):
        assert mean_diff(image, plain) > CLEARLY_DIFFERENT
        assert mean_diff(image, with_a) > CLEARLY_DIFFERENT
    assert mean_diff(te_only, unet_only) > CLEARLY_DIFFERENT


def test_two_loras_at_once_differ_from_each_alone(pipe, lora_set, loras, plain, with_a) -> None:
    # te_only is a file with a text encoder part only (no lora_unet_* keys)
    only_te_file = with_loras(pipe, lora_set, [spec(loras["te_only"])])
    both = with_loras(pipe, lora_set, [spec(loras["a"]), spec(loras["te_only"])])
    assert mean_diff(only_te_file, plain) > CLEARLY_DIFFERENT
    assert mean_diff(both, with_a) > CLEARLY_DIFFERENT
    assert mean_diff(both, only_te_file) > CLEARLY_DIFFERENT


def test_nothing_leaks_into_the_next_batch(pipe, lora_set, loras, plain, with_a) -> None:
    assert active_adapters(pipe) == set()
    with pytest.raises(RuntimeError, match="cancelled"):
        with lora_set.applied(pipe, [spec(loras["a"]), spec(loras["b"])]):
            assert active_adapters(pipe) == {adapter_name_for("sha-a"), adapter_name_for("sha-b")}
            raise RuntimeError("cancelled")
    assert active_adapters(pipe) == set()
    assert np.array_equal(txt2img(pipe), plain)
    with lora_set.applied(pipe, []):  # a batch without LoRAs
        assert active_adapters(pipe) == set()


# --------------------------------------------------------------------------- loading, eviction, refusals


def test_each_file_is_loaded_once_and_seen_by_every_pipeline_object(load, loras) -> None:
    cached, lora_set = load(), LoraSet()
    with lora_set.applied(cached, [spec(loras["a"])]):
        # A second pipeline object over the same modules (an img2img batch, another VAE) sees the adapter.
        other = StableDiffusionPipeline(**cached.components, requires_safety_checker=False)
        assert active_adapters(other) == {adapter_name_for("sha-a")}
    with lora_set.applied(other, [spec(loras["a"], te_weight=0.3)]):
        pass
    assert lora_set.loads == 1
    assert cached.get_list_adapters() == {"unet": [adapter_name_for("sha-a")], "text_encoder": [adapter_name_for("sha-a")]}


def test_least_recently_used_adapters_are_evicted_beyond_capacity(load, loras) -> None:
    cached, lora_set = load(), LoraSet(capacity=2)
    for name in ("a", "b", "a", "c"):
        with lora_set.applied(cached, [spec(loras[name])]):
            pass
    assert lora_set.loaded() == ["sha-a", "sha-c"]  # b was the least recently used
    assert lora_set.loads == 3
    assert cached_adapters(cached) == {adapter_name_for("sha-a"), adapter_name_for("sha-c")}
    assert set(cached.get_list_adapters()["text_encoder"]) == cached_adapters(cached)
    with lora_set.applied(cached, [spec(loras["b"])]):
        pass
    assert lora_set.loads == 4 and lora_set.loaded() == ["sha-c", "sha-b"]
    # One batch may need more than the capacity: all its adapters stay while it runs.
    with lora_set.applied(cached, [spec(loras[n]) for n in ("a", "b", "c")]):
        assert len(active_adapters(cached)) == 3
    assert lora_set.loaded() == ["sha-b", "sha-c"] and len(cached_adapters(cached)) == 2


def test_a_lora_for_another_model_family_is_refused_clearly(pipe, lora_set, loras, plain, with_a) -> None:
    loaded_before = lora_set.loaded()
    with pytest.raises(LoraMismatch) as caught:
        with lora_set.applied(pipe, [spec(loras["a"]), spec(loras["sdxl"])]):
            pytest.fail("the with body must not run")
    message = str(caught.value)
    assert "'sdxl.safetensors' does not fit this checkpoint" in message
    assert "SDXL" in message and "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in message
    assert set(lora_set.loaded()) == set(loaded_before)
    assert adapter_name_for("sha-sdxl") not in cached_adapters(pipe)
    assert active_adapters(pipe) == set()
    assert np.array_equal(txt2img(pipe), plain)


def test_other_widths_are_refused_before_loading(load, loras, tmp_path: Path) -> None:
    tensors = load_file(str(loras["a"]))
    key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    tensors[key] = torch.zeros((4, 48), dtype=torch.float16)  # as an SD2 LoRA on an SD1 model
    save_file(tensors, str(tmp_path / "wide.safetensors"))
    cached, lora_set = load(), LoraSet()
    with pytest.raises(LoraMismatch, match=r"1 layers have other shapes.*q_proj is \[4, 48\]"):
        with lora_set.applied(cached, [spec(tmp_path / "wide.safetensors")]):
            pass
    assert lora_set.loads == 0 and cached_adapters(cached) == set()


def test_lycoris_files_are_refused(load, tmp_path: Path) -> None:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    loha = {f"{name}.hada_w1_a": torch.zeros(32, 4), f"{name}.hada_w1_b": torch.zeros(4, 32)}
    save_file(loha, str(tmp_path / "loha.safetensors"))
    with pytest.raises(LoraMismatch, match="not a plain LoRA.*hada_w1_a"):
        with LoraSet().applied(load(), [spec(tmp_path / "loha.safetensors")]):
            pass


def test_pickle_files_are_refused(pipe, lora_set, loras, tmp_path: Path) -> None:
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(loras["a"].read_bytes())  # even a safetensors payload: the name says pickle
    loads = lora_set.loads
    with pytest.raises(LoraMismatch, match="only .safetensors files are accepted"):
        with lora_set.applied(pipe, [spec(pickled)]):
            pass
    assert lora_set.loads == loads


def test_a_set_belongs_to_one_pipelines_modules(pipe, lora_set, load) -> None:
    with lora_set.applied(pipe, []):
        pass
    with pytest.raises(ValueError, match="another pipeline"):
        with lora_set.applied(load(), []):
            pass
