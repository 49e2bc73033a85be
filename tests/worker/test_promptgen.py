"""The prompt-expansion runtime (`runtime/promptgen.py`) on tiny random-weight GPT-2 and BLOOM models.

The models are built here with transformers (`runtime/tiny/promptgen.py`: a byte-level BPE trained
offline, random weights) into a temporary folder and loaded through the same AutoTokenizer /
AutoModelForCausalLM path as a real model folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from a1111.promptgen import BEAUTIFUL_PROMPT_TEMPLATE, model_input, result_text
from runtime.promptgen import PromptgenModelError, PromptgenRuntime, sample_rows
from runtime.specs import ExpansionRequest, PromptgenSpec
from runtime.tiny.promptgen import write_tiny_promptgen

FAMILIES = ("gpt2", "bloom")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("promptgen")
    return {family: write_tiny_promptgen(root / f"tiny-{family}", family) for family in FAMILIES}


@pytest.fixture(scope="module")
def runtime() -> PromptgenRuntime:
    return PromptgenRuntime(device=torch.device("cpu"), dtype=torch.float32)


def _spec(folder: Path, *requests: ExpansionRequest, sha: str | None = None, allow_pickled: bool = False) -> PromptgenSpec:
    return PromptgenSpec(model_path=str(folder), model_sha256=sha or folder.name, requests=requests, allow_pickled=allow_pickled)


def _request(family: str, prompt: str = "a cat", **settings) -> ExpansionRequest:
    return ExpansionRequest(prompt=model_input(prompt, family), **{"num_results": 3, "max_new_tokens": 12, "seed": 5, **settings})


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_request_and_seed_gives_the_same_texts_every_time(folders, runtime, family) -> None:
    spec = _spec(folders[family], _request(family))
    first = runtime.expand(spec)
    assert first == runtime.expand(spec) == runtime.expand(spec)
    assert len(first) == 1 and len(first[0]) == 3 and len(set(first[0])) == 3  # one seed per result
    assert all(text.strip() for text in first[0])
    assert runtime.expand(_spec(folders[family], _request(family, seed=6)))[0] != first[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_request_in_a_batch_gets_the_texts_it_gets_alone(folders, runtime, family) -> None:
    """Several members' expansions share one sampling loop; each row keeps its own settings and seed."""
    alice = _request(family, "a cat", seed=11)
    bob = _request(family, "a futuristic city at night", num_results=2, max_new_tokens=6, temperature=0.7,
                   top_k=0, top_p=0.9, repetition_penalty=1.3, seed=99)
    alone = [runtime.expand(_spec(folders[family], alice))[0], runtime.expand(_spec(folders[family], bob))[0]]
    assert runtime.expand(_spec(folders[family], alice, bob)) == alone


def test_results_stop_at_their_own_max_length(folders, runtime) -> None:
    tokenizer = runtime.model(str(folders["gpt2"]), "gpt2").tokenizer
    short, long = _request("gpt2", max_new_tokens=2, seed=1), _request("gpt2", max_new_tokens=15, seed=2)
    texts = runtime.expand(_spec(folders["gpt2"], short, long, sha="gpt2"))
    assert all(len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 3 for text in texts[0])
    assert max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts[1]) > 3


def test_a_dropped_request_stops_and_gets_nothing_while_the_other_finishes(folders, runtime) -> None:
    steps: list[int] = []

    def on_step(step: int) -> list[int]:
        steps.append(step)
        return [0] if step >= 2 else []  # the first member cancelled at the second token

    texts = runtime.expand(_spec(folders["bloom"], _request("bloom", max_new_tokens=30, seed=3, temperature=3.0, top_k=0),
                                 _request("bloom", max_new_tokens=8, seed=4)), on_step=on_step)
    assert texts[0] == [] and len(texts[1]) == 3
    assert steps[:2] == [1, 2] and len(steps) <= 8  # the loop ends with the last live row


def test_every_request_dropped_ends_the_loop_at_once(folders, runtime) -> None:
    steps: list[int] = []
    texts = runtime.expand(_spec(folders["gpt2"], _request("gpt2", max_new_tokens=50), sha="gpt2"),
                           on_step=lambda step: steps.append(step) or [0])
    assert texts == [[]] and steps == [1]


def test_models_stay_loaded_by_weights_hash(folders) -> None:
    runtime = PromptgenRuntime(device=torch.device("cpu"), dtype=torch.float32, capacity=1)
    runtime.expand(_spec(folders["gpt2"], _request("gpt2", max_new_tokens=2), sha="sha-gpt2"))
    runtime.expand(_spec(folders["gpt2"], _request("gpt2", max_new_tokens=2), sha="sha-gpt2"))
    assert (runtime.loads, runtime.loaded()) == (1, ["sha-gpt2"])
    runtime.expand(_spec(folders["bloom"], _request("bloom", max_new_tokens=2), sha="sha-bloom"))
    assert (runtime.loads, runtime.loaded()) == (2, ["sha-bloom"])


def test_pickled_weights_are_not_read_unless_allowed(folders, runtime, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    shutil.copytree(folders["gpt2"], folder)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the same weights, pickled
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(PromptgenModelError, match="pickled weights"):
        runtime.expand(_spec(folder, _request("gpt2"), sha="pickled-refused"))
    texts = runtime.expand(_spec(folder, _request("gpt2"), sha="pickled-allowed", allow_pickled=True))
    assert texts == runtime.expand(_spec(folders["gpt2"], _request("gpt2"), sha="gpt2"))  # the same weights


def test_a_folder_that_is_not_a_causal_lm_fails_with_a_clear_message(folders, runtime, tmp_path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(folders["gpt2"], folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(PromptgenModelError, match="cannot be loaded as a causal language model"):
        runtime.expand(_spec(folder, _request("gpt2"), sha="broken"))
    with pytest.raises(PromptgenModelError, match="no config.json"):
        runtime.expand(_spec(tmp_path, _request("gpt2"), sha="empty"))


def test_sampling_settings_act_per_row() -> None:
    logits = torch.tensor([[5.0, 4.0, 3.0, -1.0]] * 3)
    seen = torch.tensor([[True, False, False, False]] * 3)
    column = lambda *values: torch.tensor(values).unsqueeze(-1)  # noqa: E731
    for seed in range(20):
        picks = sample_rows(
            logits, seen=seen, temperature=column(1.0, 1.0, 1.0), top_k=column(1, 0, 2), top_p=column(1.0, 0.01, 1.0),
            repetition_penalty=column(1.0, 100.0, 1.0),
            generators=[torch.Generator().manual_seed(seed) for _ in range(3)],
        )
        assert picks[0] == 0  # top-k 1: the best token
        assert picks[1] == 1  # token 0 penalised away, then top-p keeps only the best left
        assert picks[2] in (0, 1)  # top-k 2


def test_what_the_model_reads_and_what_the_member_gets() -> None:
    assert model_input("a cat", "bloom") == BEAUTIFUL_PROMPT_TEMPLATE.format(prompt="a cat")
    assert model_input("a cat", "gpt2") == "a cat"
    assert result_text("a cat", " sitting,\n\tdetailed\x00", "bloom") == "sitting, detailed"
    assert result_text("a cat", ", sitting on a mat", "gpt2") == "a cat, sitting on a mat"
    assert result_text("a cat", " sitting", "gpt2") == "a cat sitting"


class _OpensAFileWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_allowed_pickles_are_read_weights_only_so_code_in_them_never_runs(folders, runtime, tmp_path) -> None:
    folder = tmp_path / "malicious"
    shutil.copytree(folders["gpt2"], folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"transformer.wte.weight": torch.zeros(1), "payload": _OpensAFileWhenUnpickled(marker)},
               folder / "pytorch_model.bin")
    with pytest.raises(PromptgenModelError, match="cannot be loaded"):
        runtime.expand(_spec(folder, _request("gpt2"), sha="malicious", allow_pickled=True))
    assert not marker.exists()
