"""a1111.pnginfo: reading the A1111 ``parameters`` infotext out of images and parsing it
the way A1111's ``parse_generation_parameters`` does."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from a1111.images import ImageInputError
from a1111.pnginfo import parse_generation_parameters, png_bytes, read_png_info
from a1111.infotext import generation_infotext

A1111_EXAMPLE = (
    "cpc explosion, <lora:207:1>\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 966911465, Size: 512x512, "
    "Model hash: 15012c538f, Model: realisticVisionV51_v51VAE, Clip skip: 2, "
    'ControlNet 0: "Module: none, Model: None, Weight: 1.0, Resize Mode: Crop and Resize, ..."'
)


def png_with_text(chunks: dict[str, str], *, zip_: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=zip_)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, "PNG", pnginfo=info, dpi=(72, 72))
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_user_comment(fmt: str, text: str) -> bytes:
    """A JPEG/WebP with the infotext in EXIF UserComment, as A1111 writes it via piexif
    (``UserComment.dump(text, encoding="unicode")``)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf_16_be")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


OUR_INFOTEXT = generation_infotext(
    prompt="a lighthouse at dusk, (volumetric light:1.2)",
    negative_prompt="blurry, lowres",
    steps=25,
    sampler_name="DPM++ 2M",
    schedule_label="Karras",
    cfg_scale=7.5,
    seed=1234567890,
    width=768,
    height=512,
    model_hash="6ce0161689",
    model_name="v1-5-pruned-emaonly",
)


# ---------------------------------------------------------------------------------------------
# reading


def test_our_infotext_round_trips_through_a_text_chunk() -> None:
    data = png_with_text({"parameters": OUR_INFOTEXT, "Software": "Atelier"})
    assert b"tEXt" in data
    info, items = read_png_info(data)
    assert info == OUR_INFOTEXT
    assert items == {"Software": "Atelier"}  # parameters removed; dpi is not text

    params = parse_generation_parameters(info)
    assert params["Prompt"] == "a lighthouse at dusk, (volumetric light:1.2)"
    assert params["Negative prompt"] == "blurry, lowres"
    assert params["Steps"] == "25"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Schedule type"] == "Karras"
    assert params["CFG scale"] == "7.5"
    assert params["Seed"] == "1234567890"
    assert (params["Size-1"], params["Size-2"]) == ("768", "512")
    assert "Size" not in params
    assert params["Model hash"] == "6ce0161689"
    assert params["Emphasis"] == "Original"


def test_non_latin1_prompt_is_written_as_itxt_and_read_back() -> None:
    text = "夕暮れの灯台, 猫\nNegative prompt: ぼやけた\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"
    data = png_with_text({"parameters": text})
    assert b"iTXt" in data and b"tEXt" not in data
    info, items = read_png_info(data)
    assert info == text and items == {}
    params = parse_generation_parameters(info)
    assert params["Prompt"] == "夕暮れの灯台, 猫"
    assert params["Negative prompt"] == "ぼやけた"


def test_compressed_ztxt_chunk() -> None:
    data = png_with_text({"parameters": OUR_INFOTEXT}, zip_=True)
    assert b"zTXt" in data
    assert read_png_info(data)[0] == OUR_INFOTEXT


def test_text_chunk_after_the_image_data_is_found() -> None:
    base = png_with_text({})
    iend = base.rindex(b"IEND") - 4
    data = base[:iend] + png_chunk(b"tEXt", b"parameters\0late text") + base[iend:]
    assert read_png_info(data)[0] == "late text"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment(fmt: str) -> None:
    text = "a cat, 猫\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512"
    info, items = read_png_info(with_user_comment(fmt, text))
    assert info == text
    assert "exif" not in items and "jfif" not in items


def test_gif_comment() -> None:
    buffer = io.BytesIO()
    Image.new("P", (2, 2)).save(buffer, "GIF", comment=b"a gif\nSteps: 1, Sampler: Euler, Seed: 3")
    assert read_png_info(buffer.getvalue())[0] == "a gif\nSteps: 1, Sampler: Euler, Seed: 3"


def test_image_without_parameters() -> None:
    info, items = read_png_info(png_with_text({"Title": "just a title"}))
    assert info is None
    assert items == {"Title": "just a title"}


def test_not_an_image() -> None:
    with pytest.raises(ImageInputError):
        read_png_info(b"definitely not an image")


def _no_load(self: Image.Image) -> None:
    raise AssertionError("decoded pixels of an image over the limit")


def test_bomb_header_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image.Image, "load", _no_load)
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"tEXt", b"parameters\0x")
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    )  # fmt: skip
    with pytest.raises(ImageInputError):
        read_png_info(data)


def test_metadata_is_read_without_decoding_pixels_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image.Image, "load", _no_load)
    ihdr = struct.pack(">IIBBBBB", 5000, 5000, 8, 2, 0, 0, 0)  # under Pillow's bomb limit
    data = (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"tEXt", b"parameters\0early")
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    )  # fmt: skip
    assert read_png_info(data, max_pixels=1_000_000)[0] == "early"


# ---------------------------------------------------------------------------------------------
# parsing


def test_a1111_reference_example() -> None:
    params = parse_generation_parameters(A1111_EXAMPLE)
    assert params["Prompt"] == "cpc explosion, <lora:207:1>"
    assert params["Negative prompt"] == ""
    assert params["Steps"] == "20"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Schedule type"] == "Karras"  # present, so not defaulted
    assert params["CFG scale"] == "7"
    assert params["Seed"] == "966911465"
    assert (params["Size-1"], params["Size-2"]) == ("512", "512")
    assert params["Model hash"] == "15012c538f"
    assert params["Model"] == "realisticVisionV51_v51VAE"
    assert params["Clip skip"] == "2"
    assert params["ControlNet 0"] == "Module: none, Model: None, Weight: 1.0, Resize Mode: Crop and Resize, ..."
    assert params["RNG"] == "GPU"
    assert "Emphasis" not in params


def test_defaults_when_absent() -> None:
    params = parse_generation_parameters("a dog\nSteps: 20, Sampler: Euler a, Seed: 1")
    assert params["Clip skip"] == "1"
    assert params["Schedule type"] == "Automatic"
    assert params["RNG"] == "GPU"
    assert params["Hires sampler"] == "Use same sampler"
    assert params["Hires schedule type"] == "Use same scheduler"
    assert params["Hires checkpoint"] == "Use same checkpoint"
    assert params["Hires prompt"] == "" and params["Hires negative prompt"] == ""
    assert params["Mask mode"] == "Inpaint masked"
    assert params["Masked content"] == "original"
    assert params["Inpaint area"] == "Whole picture"
    assert params["VAE Encoder"] == params["VAE Decoder"] == "Full"
    assert params["FP8 weight"] == "Disable"
    assert all(isinstance(value, str) for value in params.values())


def test_quoted_values_are_json_unquoted() -> None:
    text = (
        "p\nSteps: 20, Sampler: Euler, Seed: 1, "
        'Lora hashes: "foxStyle: a1b2c3d4e5f6, other: 0123456789ab", '
        'Note: "say \\"hi\\", then: go", TI hashes: "EasyNegative: 66a7279a88dd"'
    )
    params = parse_generation_parameters(text)
    assert params["Lora hashes"] == "foxStyle: a1b2c3d4e5f6, other: 0123456789ab"
    assert params["Note"] == 'say "hi", then: go'
    assert params["TI hashes"] == "EasyNegative: 66a7279a88dd"


def test_missing_negative_prompt_and_multiline_prompt() -> None:
    text = (
        "line one\nline two,  (detailed)\n  line three  \n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 640x448"
    )
    params = parse_generation_parameters(text)
    assert params["Prompt"] == "line one\nline two,  (detailed)\nline three"
    assert params["Negative prompt"] == ""
    assert (params["Size-1"], params["Size-2"]) == ("640", "448")
    assert params["Emphasis"] == "Original"


def test_multiline_negative_prompt() -> None:
    text = "pos\nNegative prompt: neg one\nneg two\nSteps: 1, Sampler: Euler, Seed: 2"
    params = parse_generation_parameters(text)
    assert params["Prompt"] == "pos"
    assert params["Negative prompt"] == "neg one\nneg two"


def test_last_line_with_fewer_than_three_pairs_is_prompt_text() -> None:
    params = parse_generation_parameters("a photo\nstyle: noir, mood: grim")
    assert params["Prompt"] == "a photo\nstyle: noir, mood: grim"
    assert "style" not in params and "Steps" not in params


def test_other_size_keys_are_split_too() -> None:
    text = "p\nSteps: 20, Seed: 1, Size: 512x512, Hires resize: 1024x1024, Hires upscale: 2"
    params = parse_generation_parameters(text)
    assert (params["Hires resize-1"], params["Hires resize-2"]) == ("1024", "1024")
    assert params["Hires upscale"] == "2"


def test_empty_text() -> None:
    params = parse_generation_parameters("")
    assert params["Prompt"] == "" and params["Negative prompt"] == ""
    assert params["Clip skip"] == "1"


@pytest.mark.parametrize(
    ("prompt", "emphasis"),
    [
        ("a (cat:1.3)", True),
        ("[blurry]", True),
        ("a ((cat))", True),
        ("a cat", False),
        ("a \\(cat\\)", False),
        ("a (cat:1.0)", False),
    ],
)
def test_emphasis_default(prompt: str, emphasis: bool) -> None:
    params = parse_generation_parameters(f"{prompt}\nSteps: 20, Sampler: Euler, Seed: 1")
    assert ("Emphasis" in params) is emphasis


def test_hypernet_is_added_to_the_prompt() -> None:
    params = parse_generation_parameters("p\nSteps: 20, Seed: 1, Hypernet: anime, Hypernet strength: 0.5")
    assert params["Prompt"] == "p<hypernet:anime:0.5>"


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_png_bytes_keeps_the_pixels_and_the_infotext_at_every_compress_level(level: int) -> None:
    """The platform writes its PNGs at zlib level 1 (ATELIER_PNG_COMPRESS_LEVEL), not Pillow's 6:
    only the time and the size change."""
    gradient = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    data = png_bytes(gradient, A1111_EXAMPLE, compress_level=level)
    assert read_png_info(data) == (A1111_EXAMPLE, {})
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.convert("RGB").tobytes() == gradient.tobytes()
