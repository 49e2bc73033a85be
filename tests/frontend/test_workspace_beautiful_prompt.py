"""The BeautifulPrompt tab's callbacks, called as Gradio calls them (no browser, no worker).

Alice's real Blocks: the tab is shown only while she has the `beautiful-prompt` extension on,
Generate queues her own promptgen job through `promptgen_submit` and follows its row to the
texts (the worker's part is played with `job_claim` / `job_succeed`), each result goes to
txt2img or img2img appended or in place of the prompt, and her history and Cancel reach her own
jobs only. Bad input is a message in the tab naming the field. A real worker and browser run it
in `tests/e2e/test_promptgen_and_tabs_browser.py`.
"""

from __future__ import annotations

import json

import gradio as gr
import pytest
from django.utils import timezone

from frontend.preferences import Extension
from frontend.workspace.tabs.beautiful_prompt import FIELDS, RESULT_SLOTS, sent_prompt
from frontend.workspace.ui import Workspace, build_workspace
from inference.models import Job, Worker
from inference.transitions import job_claim, job_succeed
from tenants.models import Tenant
from tenants.services import tenant_hidden_tabs_set
from tenants.workdirs import tenant_model_dir

pytestmark = pytest.mark.django_db

EXTENSION = "beautiful-prompt"


@pytest.fixture(autouse=True)
def _models(tiny_promptgen_models):
    return tiny_promptgen_models


def workspace_for(user, *, enabled: bool = True) -> Workspace:
    workspace = build_workspace(user).atelier_workspace
    if enabled:
        workspace.extensions.apply_extensions([EXTENSION])
    return workspace


def form(**overrides) -> tuple:
    values = {"prompt": "a cat", "model": "atelier-tiny-gpt2", "temperature": 0.9, "top_k": 20, "top_p": 0.95,
              "repetition_penalty": 1.1, "max_length": 30, "num_results": 3, "seed": 7}
    values.update(overrides)
    return tuple(values[name] for name in FIELDS)


def finish(job: Job, texts: list[str]) -> Job:
    """Play the worker's part: claim the job and store its texts."""
    worker, _ = Worker.objects.get_or_create(name="w@test", defaults={"queue": "q.test", "last_heartbeat": timezone.now()})
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DISPATCHED, worker=worker, attempts=1)
    claimed = job_claim(public_id=job.public_id, attempt=1, worker_name=worker.name, total_steps=job.total_steps)
    assert job_succeed(job=claimed, attempt=1, outputs=[], infotexts=[], gpu_seconds=0.1, texts=texts)
    job.refresh_from_db()
    return job


def shown_results(outputs: tuple) -> list[str]:
    """The texts of the result rows an output tuple shows (progress, job id, history, texts…, rows…)."""
    texts, rows = outputs[3:3 + RESULT_SLOTS], outputs[3 + RESULT_SLOTS:]
    return [text.value for text, row in zip(texts, rows) if row.visible]


def test_the_extension_is_installed_and_its_tab_shows_only_while_the_member_has_it_on(personas) -> None:
    assert Extension.objects.filter(name=EXTENSION).exists()  # the migration installed it
    alice = workspace_for(personas["alice"], enabled=False)
    assert alice.beautiful_prompt.block.visible is False
    with pytest.raises(gr.Error, match="BeautifulPrompt is off for you"):
        next(alice.beautiful_prompt.generate_prompts(*form()))
    assert not Job.objects.filter(kind="promptgen").exists()

    *_, tab = alice.extensions.apply_extensions([EXTENSION])
    assert tab.visible is True
    assert alice.stored_settings()[id(alice.beautiful_prompt.block)]["visible"] is True
    *_, tab = alice.extensions.apply_extensions([])
    assert tab.visible == "hidden"
    assert alice.stored_settings()[id(alice.beautiful_prompt.block)]["visible"] == "hidden"
    # Bob (same team) never turned it on: his tab stays hidden.
    assert workspace_for(personas["bob"], enabled=False).beautiful_prompt.block.visible is False


def test_the_tab_is_not_built_where_the_operators_hid_it(personas) -> None:
    tenant_hidden_tabs_set(tenant=Tenant.objects.get(slug="studio-a"), tabs=["beautiful-prompt"])
    alice = workspace_for(personas["alice"])
    assert alice.beautiful_prompt.block is None
    assert not {fn.name for fn in alice.blocks.fns.values()} & {"generate_prompts", "send_prompt_to_txt2img"}
    assert workspace_for(personas["charlie"]).beautiful_prompt.block is not None


def test_the_model_list_is_the_member_s_own_team_s_and_public_models(personas, tiny_promptgen_models) -> None:
    import shutil

    alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
    team_folder = tenant_model_dir("studio-b", "promptgen") / "studio-b-prompts"
    shutil.copytree(tiny_promptgen_models["gpt2"], team_folder, dirs_exist_ok=True)  # after the build
    try:
        # Refresh lists a model put in the folder since: charlie's team's, not in alice's list.
        charlie_dropdown, _note = charlie.beautiful_prompt.refresh_promptgen_models(None)
        alice_dropdown, _note = alice.beautiful_prompt.refresh_promptgen_models("atelier-tiny-gpt2")
        assert any(value.startswith("studio-b-prompts [") for _label, value in charlie_dropdown.choices)
        assert not any(value.startswith("studio-b-prompts") for _label, value in alice_dropdown.choices)
        alice, charlie = workspace_for(personas["alice"]), workspace_for(personas["charlie"])
        alice_models = [value for _label, value in alice.beautiful_prompt["model"].choices]
        charlie_models = [value for _label, value in charlie.beautiful_prompt["model"].choices]
        assert any(v.startswith("atelier-tiny-gpt2 [") for v in alice_models)
        assert any(v.startswith("studio-b-prompts [") for v in charlie_models)
        assert not any(v.startswith("studio-b-prompts") for v in alice_models)
        assert alice.beautiful_prompt["no_models"].visible is False
        # Charlie's team model, named by alice: refused in her tab, naming the model, nothing queued.
        with pytest.raises(gr.Error, match="model.*unknown prompt-generation model 'studio-b-prompts'"):
            list(alice.beautiful_prompt.generate_prompts(*form(model="studio-b-prompts")))
        assert not Job.objects.filter(owner=personas["alice"]).exists()
    finally:
        shutil.rmtree(team_folder)


def test_without_any_model_the_tab_says_what_to_install_and_where(personas, settings, tmp_path) -> None:
    settings.ATELIER_PUBLIC_MODEL_DIRS = {**settings.ATELIER_PUBLIC_MODEL_DIRS, "promptgen": tmp_path / "none"}
    alice = workspace_for(personas["alice"])
    note = alice.beautiful_prompt["no_models"]
    assert note.visible is True and alice.beautiful_prompt["model"].choices == []
    assert "users/alice/models/promptgen" in note.value and "tenants/studio-a/models/promptgen" in note.value
    assert str(tmp_path / "none") in note.value and "model.safetensors" in note.value
    with pytest.raises(gr.Error, match="model"):
        list(alice.beautiful_prompt.generate_prompts(*form(model=None)))


def test_generate_queues_alices_promptgen_job_and_follows_it_to_its_results(personas) -> None:
    tab = workspace_for(personas["alice"]).beautiful_prompt
    following = tab.generate_prompts(*form())
    first = next(following)
    job = Job.objects.get(public_id=first[1])
    assert (job.owner, job.kind, job.status) == (personas["alice"], "promptgen", Job.Status.QUEUED)
    p = job.params
    assert (p["prompt"], p["temperature"], p["top_k"], p["top_p"]) == ("a cat", 0.9, 20, 0.95)
    assert (p["repetition_penalty"], p["max_length"], p["num_results"], p["seed"]) == (1.1, 30, 3, 7)
    assert 'data-status="queued"' in first[0]

    finish(job, ["a cat, oil painting", "a cat in a garden, bokeh", "a fluffy cat, 8k"])
    last = list(following)[-1]
    assert 'data-status="succeeded"' in last[0] and last[1] == ""
    assert shown_results(last) == ["a cat, oil painting", "a cat in a garden, bokeh", "a fluffy cat, 8k"]
    history = last[2]
    assert [value for _label, value in history.choices] == [job.public_id]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"prompt": "   "}, "prompt"), ({"prompt": "x" * 1001}, "prompt"), ({"temperature": 0}, "temperature"),
    ({"top_p": 1.5}, "top_p"), ({"repetition_penalty": 0.5}, "repetition_penalty"), ({"max_length": 0}, "max_length"),
    ({"num_results": 40}, "num_results"), ({"seed": -5}, "seed"), ({"model": "nope"}, "model"),
])
def test_bad_input_is_a_message_in_the_tab_naming_the_field(personas, overrides, field) -> None:
    tab = workspace_for(personas["alice"]).beautiful_prompt
    following = tab.generate_prompts(*form(**overrides))
    shown = next(following)
    assert 'data-status="error"' in shown[0] and field in shown[0], shown[0]
    assert shown_results(shown) == []  # no earlier results under the error
    with pytest.raises(gr.Error, match=field):
        next(following)
    assert not Job.objects.filter(kind="promptgen").exists()


def test_a_result_goes_to_txt2img_or_img2img_appended_or_in_place_of_the_prompt(personas) -> None:
    tab = workspace_for(personas["alice"]).beautiful_prompt
    assert sent_prompt("a house", "a cat, 8k", "append") == "a house, a cat, 8k"
    assert sent_prompt("a house,  ", "a cat", "append") == "a house, a cat"
    assert sent_prompt("", "a cat", "append") == "a cat"
    assert sent_prompt("a house", "a cat", "replace") == "a cat"
    prompt, tabs = tab.send_prompt_to_txt2img("a cat, 8k ", "append", "masterpiece")
    assert prompt == "masterpiece, a cat, 8k" and tabs.selected == "txt2img"
    prompt, tabs = tab.send_prompt_to_img2img("a cat, 8k", "replace", "masterpiece")
    assert prompt == "a cat, 8k" and tabs.selected == "img2img"
    with pytest.raises(gr.Error, match="empty"):
        tab.send_prompt_to_txt2img("  ", "append", "masterpiece")


def test_history_reload_and_cancel_reach_the_member_s_own_expansions_only(personas) -> None:
    alice, bob = workspace_for(personas["alice"]).beautiful_prompt, workspace_for(personas["bob"]).beautiful_prompt
    alices = finish(alice.submit(*form(prompt="a cat")), ["alice's cat, watercolor"])
    bobs = finish(bob.submit(*form(prompt="a dog")), ["bob's dog, oil painting"])
    assert [value for _label, value in alice.history_choices()] == [alices.public_id]
    assert [value for _label, value in bob.history_choices()] == [bobs.public_id]

    prompt, *results = alice.show_expansion(alices.public_id)
    assert prompt == "a cat" and shown_results(("", "", "", *results)) == ["alice's cat, watercolor"]
    assert all(update is gr.skip() or update == gr.skip() for update in alice.show_expansion(bobs.public_id))

    # A page load shows her last expansion, never bob's.
    loaded = list(alice.reattach_prompts())[-1]
    assert shown_results(loaded) == ["alice's cat, watercolor"]
    assert "bob" not in json.dumps([getattr(u, "value", None) for u in loaded[3:3 + RESULT_SLOTS]])

    # Cancel with bob's running job's id cancels nothing of bob's.
    running = bob.submit(*form(prompt="a horse"))
    alice.cancel_prompts(running.public_id)
    running.refresh_from_db()
    assert not running.cancel_requested and running.status == Job.Status.QUEUED
    bob.cancel_prompts(running.public_id)
    running.refresh_from_db()
    assert running.cancel_requested or running.status == Job.Status.CANCELLED


def test_a_running_expansion_is_followed_after_a_reload(personas) -> None:
    tab = workspace_for(personas["alice"]).beautiful_prompt
    job = tab.submit(*form())
    reattached = tab.reattach_prompts()
    first = next(reattached)
    assert first[1] == job.public_id and 'data-status="queued"' in first[0]
    finish(job, ["a cat, pastel"])
    assert shown_results(list(reattached)[-1]) == ["a cat, pastel"]
