"""A1111's selectable scripts through `/sdapi/v1` (`a1111/scripts.py`): each script's positional
layout as A1111 1.10's `ui()` returns it, the X/Y/Z axis indices per tab, prompt matrix and
prompts-from-file expansion, and the 422s that name the argument at fault. (The cells running as
one job group, grid and images, run in tests/e2e/test_a1111_client.py.)"""

from __future__ import annotations

import random

import pytest

from a1111.deepcache import DeepCachePass
from a1111.errors import RequestValidationError
from a1111.generation import GenerationRequest, Limits, parse_generation_request
from a1111.scripts import (
    PlanContext,
    ScriptPlan,
    find_script,
    parse_prompt_line,
    plan_script,
    scripts_list,
    xyz_axis_labels,
)


def _base(**fields) -> GenerationRequest:
    return parse_generation_request({"prompt": "a cat", "seed": 5, "width": 64, "height": 64, "steps": 2, **fields})


def _plan(name: str, args, base: GenerationRequest | None = None, **context) -> ScriptPlan:
    ctx = PlanContext(limits=Limits(), max_cells=context.pop("max_cells", 16), rng=random.Random(1), **context)
    script = find_script(name)
    assert script is not None
    return plan_script(script, args, base or _base(), ctx)


def _refused(name: str, args, base: GenerationRequest | None = None, **context) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as caught:
        _plan(name, args, base, **context)
    return caught.value


def test_xyz_axis_indices_follow_a1111s_list_per_tab_and_cells_run_x_fastest() -> None:
    txt2img, img2img = xyz_axis_labels(False), xyz_axis_labels(True)
    # A1111 1.10: the txt2img list drops the img2img-only axes and vice versa, so indices differ
    assert (txt2img[1], txt2img[4], txt2img[6], txt2img[7], txt2img[9], txt2img[11], txt2img[30]) == (
        "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "VAE")
    assert (img2img[6], img2img[7], img2img[9], img2img[10], img2img[29]) == (
        "Image CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "VAE")
    assert "Hires steps" not in img2img and "Image CFG Scale" not in txt2img

    # X: Steps 2,3 (text); Y: Sampler from the dropdown list (csv_mode off), as A1111 reads it
    plan = _plan("X/Y/Z plot", [4, "2, 3", [], 9, "ignored", ["Euler a", "DDIM"], 0, "", [], True, True])
    assert [(c.steps, c.sampler_name, c.seed) for c in plan.cells] == [
        (2, "Euler a", 5), (3, "Euler a", 5), (2, "DDIM", 5), (3, "DDIM", 5)]
    assert plan.plot is not None and plan.plot.shape == (2, 2, 1) and plan.include_cells and plan.legend
    assert plan.plot.x.labels == ("Steps: 2", "Steps: 3") and plan.first_image_only

    # img2img indices; csv_mode reads the text; vary seeds for Y; labels by name too
    base = _base(kind="img2img")
    plan = _plan("x/y/z plot", ["prompt s/r", "cat, dog", [], 9, "Euler a, DDIM", ["LMS"], 0, "", [],
                                False, False, False, False, False, True, False, 0, True], base)
    assert [(c.prompt, c.sampler_name, c.seed) for c in plan.cells] == [
        ("a cat", "Euler a", 5), ("a dog", "Euler a", 5), ("a cat", "DDIM", 7), ("a dog", "DDIM", 7)]
    assert not plan.legend and not plan.include_cells and plan.group_spec()["legend"] is False

    # the axes beyond the workspace's first ones: Schedule type (17), Clip skip (25), Var. seed (2)
    plan = _plan("x/y/z plot", [17, "", ["Karras", "exponential"], 25, "1, 2", [], 2, "9", []], _base(sampler_name="Euler"))
    assert [(c.scheduler, c.clip_skip, c.subseed) for c in plan.cells] == [
        ("Karras", 1, 9), ("Exponential", 1, 9), ("Karras", 2, 9), ("Exponential", 2, 9)]
    assert plan.plot is not None and plan.plot.x.labels == ("Schedule type: Karras", "Schedule type: Exponential")
    plan = _plan("x/y/z plot", [26, "0.3, 0.6", [], 5, "1", [], 3, "0.5"], _base(enable_hr=True))
    assert [(c.denoising_strength, c.hr_second_pass_steps, c.subseed_strength) for c in plan.cells] == [
        (0.3, 1, 0.5), (0.6, 1, 0.5)]
    assert _refused("x/y/z plot", [3, "0.5"], _base(kind="img2img")).field == "script_args[1]"  # txt2img only here
    # the sampler parameters' axes: Eta (24) and Sigma Churn (13) in txt2img's list
    assert (txt2img[13], txt2img[24]) == ("Sigma Churn", "Eta")
    plan = _plan("x/y/z plot", [24, "0.2, 0.4", [], 13, "3", []], _base(sampler_name="Euler a"))
    assert [c.sampler_parameters.eta for c in plan.cells] == [0.2, 0.4]  # Euler a takes no churn: dropped
    # Token merging ratio (34) and its high-res one (35): A1111's override_settings, the first wins over img2img's option
    plan = _plan("x/y/z plot", [34, "0, 0.5", [], 35, "0.3", []], _base(enable_hr=True))
    assert [(c.token_merging_first_pass, c.token_merging_hires_pass) for c in plan.cells] == [(0.0, 0.3), (0.5, 0.3)]
    assert plan.plot is not None and plan.plot.x.labels == ("Token merging ratio: 0", "Token merging ratio: 0.5")
    img2img = _base(kind="img2img", override_settings={"token_merging_ratio_img2img": 0.4})
    plan = _plan("x/y/z plot", [33, "0.2, 0"], img2img)
    assert [c.token_merging_first_pass for c in plan.cells] == [0.2, 0.4]
    assert _refused("x/y/z plot", [34, "0.95"]).field == "script_args[1]"  # A1111's slider stops at 0.9
    # the DeepCache extension's axes come after A1111's (43 in txt2img's list on): they set its options
    assert txt2img[43:46] == ["[DeepCache] Enable DeepCache for", "[DeepCache] Cache Resnet level",
                              "[DeepCache] Cache Disable initial step percentage"]
    plan = _plan("x/y/z plot", [43, "", ["disable", "both passes"], 44, "0, 3", []],
                 _base(steps=10, override_settings={"deepcache_enable": True}))
    assert [(c.deepcache_passes, c.deepcache_cache_resnet_level) for c in plan.cells] == [
        ("disable", 0), ("both passes", 0), ("disable", 3), ("both passes", 3)]
    assert plan.cells[0].deepcache_first_pass is None and plan.cells[3].override_settings["deepcache_cache_resnet_level"] == 3
    assert plan.cells[3].deepcache_first_pass == DeepCachePass(level=3, enable_after=4, full_run_step_rate=5)
    assert _refused("x/y/z plot", [44, "11"]).field == "script_args[1]"  # the extension's slider stops at 10
    assert _refused("x/y/z plot", [43, "always", [], 0, "", [], 0, "", [], True, False, False, False, False, False,
                                   False, 0, True]).field == "script_args[1]"
    assert "not available" in _refused("x/y/z plot", [47, "true"]).message  # HR Reuse: not offered


@pytest.mark.parametrize(
    ("args", "field", "text"),
    [
        ([8, "a, b"], "script_args[0]", "'Prompt order' axis is not available"),
        ([49, "1"], "script_args[0]", "0 to 48"),  # A1111 1.10's 43 axes and the DeepCache extension's 6
        (["Speed", "1"], "script_args[0]", "axis type"),
        ([4, "0-2"], "script_args[1]", "out of range"),
        ([4, "1", [], 7, "horse, cow"], "script_args[4]", "did not find 'horse'"),
        ([9, "", ["Nope"]], "script_args[2]", "Nope"),
        ([1, "1-5", [], 4, "1-5"], "script_args", "ATELIER_MAX_XYZ_CELLS"),
        ([4, "1", [], 0, "", [], 0, "", [], "yes"], "script_args[9]", "Draw legend"),
        ([4, "1"] + [False] * 17, "script_args", "at most 18 arguments"),
    ],
)
def test_xyz_arguments_that_do_not_fit_name_the_argument(args, field, text) -> None:
    error = _refused("X/Y/Z plot", args, max_cells=16)
    assert error.field == field and text in error.message, error


def test_prompt_matrix_makes_a1111s_combinations_and_grid() -> None:
    plan = _plan("Prompt matrix", [], _base(prompt="a cat|hat|blue|red"))
    assert [c.prompt for c in plan.cells] == [
        "a cat", "a cat, hat", "a cat, blue", "a cat, hat, blue", "a cat, red", "a cat, hat, red",
        "a cat, blue, red", "a cat, hat, blue, red"]
    assert {(c.seed, c.batch_size, c.n_iter) for c in plan.cells} == {(5, 1, 1)}
    # A1111's layout: the first half of the parts across (low bits), the rest down
    assert plan.plot is not None and plan.plot.shape == (4, 2, 1)
    assert plan.plot.x.labels == ("", "hat", "blue", "hat, blue") and plan.plot.y.labels == ("", "red")

    plan = _plan("prompt matrix", [True, True, "negative", "space"], _base(negative_prompt="ugly|blurry"))
    assert [(c.prompt, c.negative_prompt, c.seed) for c in plan.cells] == [("a cat", "ugly", 5), ("a cat", "blurry ugly", 6)]

    assert _refused("prompt matrix", [False, False, "both"]).field == "script_args[2]"
    assert _refused("prompt matrix", [], _base(prompt="a|b|c|d|e|f"), max_cells=16).field == "prompt"


def test_prompts_from_file_one_job_per_line_with_a1111s_options() -> None:
    text = 'a dog\n\n--prompt "a big cow" --steps 3 --sampler_name DDIM --cfg_scale 4 --width 96\n--negative_prompt fog --seed 77'
    plan = _plan("Prompts from file or textbox", [True, False, "end", text], _base(prompt="photo"))
    assert plan.plot is None and plan.group_spec()["grid"] is False
    assert [(c.prompt, c.negative_prompt, c.steps, c.sampler_name, c.cfg_scale, c.width, c.seed) for c in plan.cells] == [
        ("photo a dog", "", 2, "Euler", 7.0, 64, 5),
        ("photo a big cow", "", 3, "DDIM", 4.0, 96, 6),  # "Iterate seed every line"
        ("photo", "fog", 2, "Euler", 7.0, 64, 77),
    ]
    assert parse_prompt_line("--prompt a b c --n_iter 2 --tiling true") == {"prompt": "a b c", "n_iter": "2", "tiling": "true"}

    def refused_line(line: str) -> str:
        error = _refused("prompts from file or textbox", [False, False, "start", f"ok\n{line}"])
        assert error.field == "script_args[3]" and "line 2" in error.message, error
        return error.message

    assert "unknown option --foo" in refused_line("--foo 1")
    assert "--steps must be at least 1" in refused_line("--steps 0")
    assert "server folders" in refused_line("--outpath_samples /tmp")
    assert "no value" in refused_line("--prompt x --seed")
    assert _refused("prompts from file or textbox", [False, False, "middle", "x"]).field == "script_args[2]"
    assert _refused("prompts from file or textbox", [False, False, "start", " \n "]).field == "script_args[3]"


def test_script_names_and_pending_scripts() -> None:
    assert find_script(None) is None and find_script("") is None
    assert find_script("SD upscale") is None  # pending: a plain generation with a note
    with pytest.raises(RequestValidationError, match="script 'nope' not found"):
        find_script("nope")
    listed = scripts_list()
    assert listed["txt2img"] == ["prompt matrix", "prompts from file or textbox", "x/y/z plot", "controlnet"]
    assert "controlnet m2m" not in listed["txt2img"]  # webuiapi's has_controlnet stays false


@pytest.mark.django_db
def test_sdapi_lists_the_scripts_and_refuses_what_does_not_fit_with_422(api, tiny_checkpoint_path) -> None:
    alice = api("alice")
    assert alice.get("/sdapi/v1/scripts").json() == scripts_list()
    info = {(item["name"], item["is_img2img"]): item for item in alice.get("/sdapi/v1/script-info").json()}
    xyz = info[("x/y/z plot", False)]
    assert len(xyz["args"]) == 18 and xyz["args"][0]["label"] == "X type" and xyz["args"][0]["choices"][4] == "Steps"
    assert info[("x/y/z plot", True)]["args"][0]["choices"][6] == "Image CFG Scale"
    assert [a["label"] for a in info[("prompts from file or textbox", False)]["args"]] == [
        "Iterate seed every line", "Use same random seed for all lines", "Insert prompts at the", "List of prompt inputs"]
    body = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2}
    for extra, field, text in (
        ({"script_name": "nope"}, "script_name", "not found"),
        ({"script_name": "x/y/z plot", "script_args": [4, "0-2"]}, "script_args[1]", "out of range"),
        ({"script_name": "x/y/z plot", "script_args": "4, 1-2"}, "script_args", "must be a list"),
        ({"alwayson_scripts": {"X/Y/Z plot": {"args": []}}}, "alwayson_scripts.X/Y/Z plot", "selectable script"),
        ({"script_name": "prompt matrix", "alwayson_scripts": {"save_dir": "tmp"}}, "alwayson_scripts.save_dir", "script_name"),
    ):
        response = alice.post("/sdapi/v1/txt2img", {**body, **extra})
        assert response.status_code == 422, response.content
        assert response.json()["body"] == field and text in response.json()["detail"], response.json()
    from inference.models import Job, JobGroup

    assert not Job.objects.exists() and not JobGroup.objects.exists()


@pytest.mark.django_db
def test_a_plan_is_queued_as_one_group_all_or_none_and_model_axes_name_their_argument(personas, tiny_checkpoint_path) -> None:
    from inference.models import Job, JobGroup
    from inference.sdapi.scripts import _submit_plan

    alice = personas["alice"]
    text = "a dog\n--prompt a cow --steps 1"
    group, job_ids = _submit_plan(alice, _plan("prompts from file or textbox", [False, False, "start", text]), None)
    assert group.spec["grid"] is False and group.spec["script"] == "prompts from file or textbox"
    assert [Job.objects.get(public_id=i).params["prompt"] for i in job_ids] == ["a dog a cat", "a cow a cat"]

    plan = _plan("x/y/z plot", [11, "atelier-tiny.safetensors, nope.safetensors", [], 0, "", [], 0, "", [], True,
                                False, False, False, False, False, False, 0, True])
    with pytest.raises(Exception) as caught:
        _submit_plan(alice, plan, None)
    assert caught.value.field == "script_args[1]" and "nope" in str(caught.value)
    assert JobGroup.objects.count() == 1 and Job.objects.count() == 2  # nothing of the refused plot
