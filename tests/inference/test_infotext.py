from a1111.infotext import format_infotext, generation_infotext


def test_layout_matches_a1111() -> None:
    text = generation_infotext(
        prompt="a cat", negative_prompt="blurry", steps=20, sampler_name="DPM++ 2M", schedule_label="Karras",
        cfg_scale=7.0, seed=1234, width=512, height=768, model_hash="6ce0161689", model_name="v1-5",
    )
    lines = text.split("\n")
    assert lines[0] == "a cat"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith(
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5, Version: "
    )


def test_empty_negative_is_omitted_values_with_separators_are_quoted() -> None:
    text = format_infotext("p", "", {"Steps": 1, "Lora hashes": "a: 1, b: 2", "Skip": None})
    assert text == 'p\nSteps: 1, Lora hashes: "a: 1, b: 2"'
