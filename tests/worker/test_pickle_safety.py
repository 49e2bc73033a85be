"""Every place the runtime reads a pickle reads it weights-only: a malicious file (a `__reduce__`
that would create a file) is refused by each loader and the file is never created; and no
`torch.load` in runtime/ may be written without `weights_only=True`."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest
import torch

from runtime.conditioning import EmbeddingError, load_embedding_file
from runtime.faces import FaceRestorerError
from runtime.faces.codeformer import load_codeformer
from runtime.faces.detection import FaceDetectorError, load_face_detector
from runtime.faces.gfpgan import load_gfpgan
from runtime.networks.hypernetwork import HypernetworkError, load_hypernetwork
from runtime.promptgen import PromptgenModelError, load_promptgen
from runtime.upscalers import UpscalerError, load_upscaler

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _malicious(path: Path, target: Path, *, zipped: bool) -> Path:
    payload = {"params_ema": {"w": _Exploit(target)}, "string_to_param": {"*": _Exploit(target)}}
    if zipped:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


LOADERS = [
    ("embedding.pt", lambda p: load_embedding_file(p), EmbeddingError),
    ("hypernetwork.pt", lambda p: load_hypernetwork(p), HypernetworkError),
    ("RealESRGAN_x4plus.pth", lambda p: load_upscaler(p), UpscalerError),
    ("GFPGANv1.4.pth", lambda p: load_gfpgan(p), FaceRestorerError),
    ("codeformer-v0.1.0.pth", lambda p: load_codeformer(p), FaceRestorerError),
    ("detection_Resnet50_Final.pth", lambda p: load_face_detector(p), FaceDetectorError),
]


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "raw-pickle"])
@pytest.mark.parametrize(("name", "load", "error"), LOADERS, ids=[name for name, _, _ in LOADERS])
def test_a_malicious_pickle_is_refused_by_every_loader_and_never_runs(tmp_path, name, load, error, zipped) -> None:
    target = tmp_path / "pwned"
    path = _malicious(tmp_path / name, target, zipped=zipped)
    with pytest.raises(error):
        load(path)
    assert not target.exists()


def test_a_promptgen_folder_with_a_malicious_bin_is_refused_even_when_pickles_are_allowed(tmp_path) -> None:
    from runtime.tiny.promptgen import write_tiny_promptgen
    from safetensors.torch import load_file

    folder = write_tiny_promptgen(tmp_path / "gpt2", "gpt2")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    target = tmp_path / "pwned"
    torch.save({**state, "payload": _Exploit(target)}, folder / "pytorch_model.bin")
    with pytest.raises(PromptgenModelError):
        load_promptgen(folder, device=torch.device("cpu"), dtype=torch.float32, allow_pickled=True)
    assert not target.exists()


def _torch_load_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                yield node


def test_every_torch_load_in_the_runtime_is_weights_only() -> None:
    unsafe = []
    seen = 0
    for path in sorted(RUNTIME.rglob("*.py")):
        for call in _torch_load_calls(ast.parse(path.read_text(), filename=str(path))):
            seen += 1
            flag = next((kw.value for kw in call.keywords if kw.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                unsafe.append(f"{path.relative_to(RUNTIME.parent)}:{call.lineno}")
    assert seen >= 3, "the scan found no torch.load calls: has the runtime moved?"
    assert not unsafe, "torch.load without weights_only=True (a pickle could run code): " + ", ".join(unsafe)
    for path in sorted(RUNTIME.rglob("*.py")):
        text = path.read_text()
        assert "pickle.load(" not in text and "pickle.loads(" not in text, path
