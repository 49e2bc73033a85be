"""Tests for A1111 hypernetworks: loading (.pt with weights_only, .safetensors) and applying them.

Plain pytest, no database: ``.venv/bin/python -m pytest tests/worker/test_hypernetwork.py -q``.
The tiny-sd model's cross-attention context is 32 wide (its UNet config's cross_attention_dim).
"""

from __future__ import annotations

import inspect
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file, save_file

from runtime.checkpoints.loading import load_pipeline
from runtime.networks.hypernetwork import (
    Hypernetwork,
    HypernetworkAttnProcessor,
    HypernetworkError,
    HypernetworkModule,
    applied,
    dropout_structure_for,
    load_hypernetwork,
)
from runtime.tiny.hypernetwork import write_tiny_hypernetwork
from runtime.tiny.model import write_tiny_checkpoint

CONTEXT_WIDTH = 32  # runtime/checkpoints/model_configs/tiny-sd/unet/config.json: cross_attention_dim


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionPipeline:
    folder = tmp_path_factory.mktemp("models")
    loaded = load_pipeline(write_tiny_checkpoint(folder / "m.safetensors"), cache_dir=folder / "cfg")
    pipeline = StableDiffusionPipeline(**loaded.components, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def hn_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypernetworks")


@pytest.fixture(scope="module")
def hn_pt(hn_folder: Path) -> Path:
    return write_tiny_hypernetwork(hn_folder / "style.pt", width=CONTEXT_WIDTH, seed=0)


@pytest.fixture(scope="module")
def hn_st(hn_folder: Path) -> Path:
    return write_tiny_hypernetwork(hn_folder / "style.safetensors", width=CONTEXT_WIDTH, seed=0, fmt="safetensors")


@pytest.fixture(scope="module")
def hypernet(hn_pt: Path) -> Hypernetwork:
    return load_hypernetwork(hn_pt)


@pytest.fixture(scope="module")
def other(hn_folder: Path) -> Hypernetwork:
    return load_hypernetwork(write_tiny_hypernetwork(hn_folder / "other.pt", width=CONTEXT_WIDTH, seed=7))


def _txt2img(pipeline: StableDiffusionPipeline) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(1234)
    with torch.inference_mode():
        out = pipeline(
            "a lighthouse at dusk", height=64, width=64, num_inference_steps=3, generator=generator, output_type="np"
        )
    return np.round(out.images[0] * 255.0)  # 0..255 levels


@pytest.fixture(scope="module")
def plain(sd: StableDiffusionPipeline) -> np.ndarray:
    return _txt2img(sd)


@pytest.fixture(scope="module")
def full(sd: StableDiffusionPipeline, hypernet: Hypernetwork) -> np.ndarray:
    """The image with ``hypernet`` at strength 1 (shared: each generation costs a second on a busy CPU)."""
    with applied(sd.unet, [(hypernet, 1.0)]):
        return _txt2img(sd)


def _processors(unet: torch.nn.Module) -> dict[str, object]:
    return {name: m.processor for name, m in unet.named_modules() if isinstance(m, Attention)}


def _max_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def _mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# --------------------------------------------------------------------------- loading


def test_both_formats_load_the_same_weights(hn_pt: Path, hn_st: Path) -> None:
    from_pt, from_st = load_hypernetwork(hn_pt), load_hypernetwork(hn_st)
    assert from_pt.widths == from_st.widths == (CONTEXT_WIDTH,)
    for loaded in (from_pt, from_st):
        assert loaded.name == "style"
        assert loaded.layer_structure == (1.0, 2.0, 1.0)
        assert loaded.activation_func == "relu"
        assert loaded.dropout_structure == (0.0, 0.3, 0.0)
        assert (loaded.add_layer_norm, loaded.activate_output, loaded.use_dropout) == (False, False, True)
        assert loaded.step == 0
    for which in (0, 1):
        pt_state = from_pt.modules[CONTEXT_WIDTH][which].state_dict()
        st_state = from_st.modules[CONTEXT_WIDTH][which].state_dict()
        # A1111's layout: Linear, ReLU, Dropout, Linear -> the second Linear is index 3.
        assert set(pt_state) == {"linear.0.weight", "linear.0.bias", "linear.3.weight", "linear.3.bias"}
        assert pt_state.keys() == st_state.keys()
        for key in pt_state:
            assert torch.equal(pt_state[key], st_state[key]), key
    k_weights = from_pt.modules[CONTEXT_WIDTH][0].state_dict()["linear.0.weight"]
    assert not torch.equal(k_weights, from_pt.modules[CONTEXT_WIDTH][1].state_dict()["linear.0.weight"])


def test_pt_file_is_a1111_layout(hn_pt: Path, hn_st: Path) -> None:
    data = torch.load(hn_pt, weights_only=True)
    assert set(data[CONTEXT_WIDTH][0]) == {"linear.0.weight", "linear.0.bias", "linear.3.weight", "linear.3.bias"}
    metadata_keys = ("layer_structure", "activation_func", "is_layer_norm", "use_dropout", "activate_output", "name")
    assert all(key in data for key in metadata_keys)
    tensors = load_file(str(hn_st))
    assert f"{CONTEXT_WIDTH}.0.linear.0.weight" in tensors and f"{CONTEXT_WIDTH}.1.linear.3.bias" in tensors


def test_tiny_writer_is_deterministic_and_atomic(tmp_path: Path, hn_pt: Path) -> None:
    again = load_hypernetwork(write_tiny_hypernetwork(tmp_path / "a.pt", width=CONTEXT_WIDTH, seed=0))
    different = load_hypernetwork(write_tiny_hypernetwork(tmp_path / "b.pt", width=CONTEXT_WIDTH, seed=1))
    reference = load_hypernetwork(hn_pt).modules[CONTEXT_WIDTH][0].state_dict()
    assert torch.equal(again.modules[CONTEXT_WIDTH][0].state_dict()["linear.0.weight"], reference["linear.0.weight"])
    different_weight = different.modules[CONTEXT_WIDTH][0].state_dict()["linear.0.weight"]
    assert not torch.equal(different_weight, reference["linear.0.weight"])
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError):
        write_tiny_hypernetwork(tmp_path / "c.ckpt", width=CONTEXT_WIDTH, fmt="ckpt")


def test_safetensors_metadata_as_python_literals(tmp_path: Path, hn_st: Path) -> None:
    # Header values are strings; JSON and Python spellings both parse, and without a stored
    # dropout_structure the dropout positions derive from use_dropout / last_layer_dropout as in A1111.
    tensors = load_file(str(hn_st))
    header = {
        "layer_structure": "(1, 2, 1)",
        "activation_func": "relu",
        "use_dropout": "True",
        "last_layer_dropout": "True",
        "activate_output": "False",
        "is_layer_norm": "false",
        "name": "2077",
        "step": "1500",
    }
    save_file(tensors, str(tmp_path / "literal.safetensors"), metadata=header)
    loaded = load_hypernetwork(tmp_path / "literal.safetensors")
    assert loaded.name == "2077" and loaded.step == 1500 and loaded.dropout_structure == (0.0, 0.3, 0.0)
    reference = load_hypernetwork(hn_st).modules[CONTEXT_WIDTH][1].state_dict()
    for key, tensor in loaded.modules[CONTEXT_WIDTH][1].state_dict().items():
        assert torch.equal(tensor, reference[key]), key


def test_module_computes_a1111_formula(hypernet: Hypernetwork) -> None:
    module = hypernet.modules[CONTEXT_WIDTH][0]
    state = module.state_dict()
    x = torch.randn(2, 77, CONTEXT_WIDTH, generator=torch.Generator().manual_seed(3))
    hidden = F.relu(F.linear(x, state["linear.0.weight"], state["linear.0.bias"]))
    mlp = F.linear(hidden, state["linear.3.weight"], state["linear.3.bias"])  # dropout is off at inference
    torch.testing.assert_close(module(x, 0.7), x + mlp * 0.7)
    assert torch.equal(module(x, 0.0), x)


def test_old_nai_key_names_load(tmp_path: Path) -> None:
    width = 8
    generator = torch.Generator().manual_seed(0)

    def pair() -> dict[str, torch.Tensor]:
        return {
            "linear1.weight": torch.randn(16, 8, generator=generator),
            "linear1.bias": torch.randn(16, generator=generator),
            "linear2.weight": torch.randn(8, 16, generator=generator),
            "linear2.bias": torch.randn(8, generator=generator),
        }

    path = tmp_path / "old.pt"
    torch.save({width: [pair(), pair()]}, path)  # no metadata at all: [1, 2, 1], no activation
    loaded = load_hypernetwork(path)
    assert loaded.name == "old" and loaded.layer_structure == (1.0, 2.0, 1.0) and loaded.activation_func is None
    assert set(loaded.modules[width][0].state_dict()) == {
        "linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"
    }


def test_weights_that_do_not_fit_the_structure_are_refused(tmp_path: Path, hn_pt: Path) -> None:
    data = torch.load(hn_pt, weights_only=True)
    data["layer_structure"] = [1, 3, 1]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(HypernetworkError, match="do not fit layer structure"):
        load_hypernetwork(tmp_path / "bad.pt")
    data["layer_structure"] = [2, 1]
    torch.save(data, tmp_path / "bad2.pt")
    with pytest.raises(HypernetworkError, match="must start and end with 1"):
        load_hypernetwork(tmp_path / "bad2.pt")
    data["layer_structure"], data["activation_func"] = [1, 2, 1], "no-such-activation"
    torch.save(data, tmp_path / "bad3.pt")
    with pytest.raises(HypernetworkError, match="unsupported activation"):
        load_hypernetwork(tmp_path / "bad3.pt")


def test_other_files_are_refused(tmp_path: Path, hn_pt: Path) -> None:
    for name in ("style.ckpt", "style.bin", "style.pth", "style"):
        target = tmp_path / name
        target.write_bytes(hn_pt.read_bytes())
        with pytest.raises(HypernetworkError, match="not a hypernetwork file"):
            load_hypernetwork(target)
    (tmp_path / "junk.pt").write_bytes(b"this is not a pickle")
    with pytest.raises(HypernetworkError):
        load_hypernetwork(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(HypernetworkError, match="safetensors"):
        load_hypernetwork(tmp_path / "junk.safetensors")
    save_file({"some.other.key": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(HypernetworkError, match="unexpected tensor"):
        load_hypernetwork(tmp_path / "foreign.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(HypernetworkError, match="not a hypernetwork"):
        load_hypernetwork(tmp_path / "list.pt")
    with pytest.raises(HypernetworkError, match="no such file"):
        load_hypernetwork(tmp_path / "missing.pt")


class _Exploit:
    """Unpickling this calls os.system (``__reduce__``): a weights_only load must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {CONTEXT_WIDTH: [_Exploit(marker), _Exploit(marker)], "layer_structure": [1, 2, 1]}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert b"system" in path.read_bytes()
    with pytest.raises(HypernetworkError, match="never code"):
        load_hypernetwork(path)
    assert not marker.exists()


def test_to_same_device_is_identity(hypernet: Hypernetwork) -> None:
    assert hypernet.to("cpu") is hypernet
    assert hypernet.device == torch.device("cpu")


# --------------------------------------------------------------------------- applying


def test_strength_zero_is_the_plain_image(
    sd: StableDiffusionPipeline, plain: np.ndarray, hypernet: Hypernetwork
) -> None:
    with applied(sd.unet, [(hypernet, 0.0)]):
        image = _txt2img(sd)
    assert _max_levels(image, plain) <= 1.0


def test_strengths_change_the_image_and_processors_are_restored(
    sd: StableDiffusionPipeline, plain: np.ndarray, full: np.ndarray, hypernet: Hypernetwork
) -> None:
    before = _processors(sd.unet)
    with applied(sd.unet, [(hypernet, 1.0)]):
        during = _processors(sd.unet)
    with applied(sd.unet, [(hypernet, 0.5)]):
        half = _txt2img(sd)
    after = _processors(sd.unet)

    assert _mean_levels(full, plain) > 2.0 and _max_levels(full, plain) > 20.0
    assert _mean_levels(half, plain) > 1.0 and _mean_levels(half, full) > 1.0
    assert _max_levels(_txt2img(sd), plain) == 0.0  # the processors are really back

    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)
    for name, processor in during.items():
        width = sd.unet.get_submodule(name).cross_attention_dim
        if name.endswith("attn2") or width == CONTEXT_WIDTH:  # attn1 too where the width matches, as A1111
            assert isinstance(processor, HypernetworkAttnProcessor), name
            assert processor.inner is before[name] and isinstance(processor.inner, AttnProcessor2_0)
            # Attention.forward filters cross_attention_kwargs by this signature: it must be the inner one's.
            assert inspect.signature(processor.__call__) == inspect.signature(processor.inner.__call__)
        else:
            assert processor is before[name], name
    assert any(not isinstance(p, HypernetworkAttnProcessor) for p in during.values())  # the 64-wide attn1s


def test_processors_are_restored_after_an_exception(sd: StableDiffusionPipeline, hypernet: Hypernetwork) -> None:
    before = _processors(sd.unet)
    with pytest.raises(RuntimeError, match="boom"):
        with applied(sd.unet, [(hypernet, 1.0)]):
            raise RuntimeError("boom")
    after = _processors(sd.unet)
    assert all(after[name] is before[name] for name in before)


def _manual_attention(
    attn: Attention, hidden: torch.Tensor, context_k: torch.Tensor, context_v: torch.Tensor
) -> torch.Tensor:
    """Attention with separate k and v contexts, computed without any processor."""
    batch, heads = hidden.shape[0], attn.heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2)

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(context_k)), split(attn.to_v(context_v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, q.shape[1] * q.shape[3])
    return attn.to_out[1](attn.to_out[0](out))


def test_two_hypernetworks_stack_in_order(
    sd: StableDiffusionPipeline, plain: np.ndarray, full: np.ndarray, hypernet: Hypernetwork, other: Hypernetwork
) -> None:
    attn = sd.unet.get_submodule("mid_block.attentions.0.transformer_blocks.0.attn2")
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(1, 16, attn.query_dim, generator=generator)
    context = torch.randn(1, 77, CONTEXT_WIDTH, generator=generator)
    first_k, first_v = hypernet.modules[CONTEXT_WIDTH]
    second_k, second_v = other.modules[CONTEXT_WIDTH]
    with torch.no_grad():
        expected = _manual_attention(
            attn, hidden, second_k(first_k(context, 1.0), 0.6), second_v(first_v(context, 1.0), 0.6)
        )
        with applied(sd.unet, [(hypernet, 1.0), (other, 0.6)]):
            got = attn(hidden, encoder_hidden_states=context)
        reversed_order = _manual_attention(
            attn, hidden, first_k(second_k(context, 0.6), 1.0), first_v(second_v(context, 0.6), 1.0)
        )
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, reversed_order)

    with applied(sd.unet, [(hypernet, 1.0), (other, 1.0)]):
        both = _txt2img(sd)
    assert _mean_levels(both, full) > 1.0 and _mean_levels(both, plain) > 1.0


def test_wrong_width_is_refused_and_unet_untouched(
    sd: StableDiffusionPipeline, hn_folder: Path, hypernet: Hypernetwork
) -> None:
    sd2_style = load_hypernetwork(write_tiny_hypernetwork(hn_folder / "sd2.safetensors", width=1024, fmt="safetensors"))
    before = _processors(sd.unet)
    with pytest.raises(HypernetworkError, match=r"1024.*\b32\b"):
        with applied(sd.unet, [(hypernet, 1.0), (sd2_style, 1.0)]):
            pytest.fail("the body must not run")
    after = _processors(sd.unet)
    assert all(after[name] is before[name] for name in before)


@pytest.mark.parametrize("strength", [float("nan"), float("inf")])
def test_non_finite_strength_is_refused(sd: StableDiffusionPipeline, hypernet: Hypernetwork, strength: float) -> None:
    with pytest.raises(HypernetworkError, match="finite"):
        with applied(sd.unet, [(hypernet, strength)]):
            pass


def test_no_hypernetworks_is_a_no_op(sd: StableDiffusionPipeline) -> None:
    before = _processors(sd.unet)
    with applied(sd.unet, []):
        assert all(p is before[name] for name, p in _processors(sd.unet).items())


def test_dropout_structure_matches_a1111() -> None:
    assert dropout_structure_for([1, 2, 1], use_dropout=False, last_layer_dropout=True) == (0.0, 0.0, 0.0)
    assert dropout_structure_for([1, 2, 1], use_dropout=True, last_layer_dropout=False) == (0.0, 0.0, 0.0)
    assert dropout_structure_for([1, 2, 2, 1], use_dropout=True, last_layer_dropout=False) == (0.0, 0.3, 0.0, 0.0)
    assert dropout_structure_for([1, 2, 2, 1], use_dropout=True, last_layer_dropout=True) == (0.0, 0.3, 0.3, 0.0)
    module = HypernetworkModule(
        4, layer_structure=[1, 2, 2, 1], activation_func="swish", add_layer_norm=True, activate_output=True,
        dropout_structure=(0.0, 0.3, 0.3, 0.0),
    )
    kinds = [type(layer).__name__ for layer in module.linear]
    assert kinds == [
        "Linear", "Hardswish", "LayerNorm", "Dropout",
        "Linear", "Hardswish", "LayerNorm", "Dropout",
        "Linear", "Hardswish", "LayerNorm",
    ]
