"""`frontend/charts.py` (pure): a series → SVG markup that parses, escapes every text, gives each
bar a tooltip, scales the axis to round steps, and names every value for screen readers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from frontend.charts import HEIGHT, Bar, bar_chart, nice_scale

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


@pytest.mark.parametrize(("largest", "whole", "scale"), [
    (0, False, (1.0, 1)), (-3, False, (1.0, 1)), (float("nan"), False, (1.0, 1)),
    (0.1, False, (0.05, 2)), (0.3, False, (0.1, 3)), (3, False, (1.0, 3)), (7, False, (2.0, 4)),
    (12.8, False, (5.0, 3)), (1015, False, (500.0, 3)), (8640, False, (5000.0, 2)),
    (2, True, (1.0, 2)), (1, True, (1.0, 1)), (9, True, (5.0, 2)),
])
def test_the_axis_is_round_steps_at_or_above_the_largest_value(largest, whole, scale) -> None:
    step, steps = nice_scale(largest, whole=whole)
    assert (step, steps) == pytest.approx(scale)
    if largest > 0:
        assert step * steps >= largest and step * (steps - 1) < largest


def test_each_bar_has_a_tooltip_and_a_height_in_proportion() -> None:
    markup = bar_chart([Bar("1", 10.0, "2026-11-01"), Bar("2", 5.0, "2026-11-02"), Bar("3", 0.0, "2026-11-03")],
                       title="GPU-seconds per day", chart_id="c", unit="GPU-s")
    svg = parse(markup)
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "c-title c-desc"
    assert svg.find(f"{SVG}title").text == "GPU-seconds per day"
    assert svg.find(f"{SVG}desc").text == "2026-11-01: 10 GPU-s; 2026-11-02: 5 GPU-s; 2026-11-03: 0 GPU-s"
    bars = svg.findall(f"{SVG}rect")
    assert [bar.find(f"{SVG}title").text for bar in bars] == [
        "2026-11-01: 10 GPU-s", "2026-11-02: 5 GPU-s", "2026-11-03: 0 GPU-s"]
    heights = [float(bar.get("height")) for bar in bars]
    assert heights[0] == pytest.approx(2 * heights[1]) and heights[2] == 0
    bottoms = {round(float(bar.get("y")) + float(bar.get("height")), 1) for bar in bars}
    assert len(bottoms) == 1 and bottoms.pop() < HEIGHT  # one baseline, inside the picture
    axis = [text.text for text in svg.findall(f"{SVG}text") if text.get("class") == "chart-axis"]
    assert axis == ["0", "5", "10"]


def test_every_text_is_escaped_and_nothing_is_styled_inline() -> None:
    evil = '<script>alert(1)</script>"&'
    markup = bar_chart([Bar(evil, 1.0, evil)], title=evil, chart_id='x" onload="alert(1)', unit=evil)
    assert "<script>" not in markup and 'onload="' not in markup and "style=" not in markup
    svg = parse(markup)  # well-formed: the quotes and ampersands are entities
    assert svg.find(f"{SVG}title").text == evil
    assert svg.find(f"{SVG}rect").find(f"{SVG}title").text == f"{evil}: 1 {evil}"


def test_long_labels_are_shortened_on_the_axis_but_whole_in_the_tooltip() -> None:
    name = "a-very-long-member-name"
    svg = parse(bar_chart([Bar(name, 2.0)], title="t", chart_id="m"))
    labels = [text.text for text in svg.findall(f"{SVG}text") if text.get("class") == "chart-label"]
    assert labels == ["a-very-lo…"]
    assert svg.find(f"{SVG}rect").find(f"{SVG}title").text == f"{name}: 2"


def test_label_every_labels_every_nth_bar_and_value_format_writes_the_values() -> None:
    bars = [Bar(str(day), day / 10) for day in range(1, 31)]
    svg = parse(bar_chart(bars, title="t", chart_id="d", label_every=2, value_format=lambda v: f"{v:.2f}"))
    labels = [text.text for text in svg.findall(f"{SVG}text") if text.get("class") == "chart-label"]
    assert labels == [str(day) for day in range(1, 31, 2)]
    assert svg.findall(f"{SVG}rect")[4].find(f"{SVG}title").text == "5: 0.50"


def test_an_empty_series_says_so_and_a_negative_value_is_drawn_flat() -> None:
    svg = parse(bar_chart([], title="t", chart_id="e", empty_text="No usage in this month."))
    assert svg.find(f"{SVG}desc").text == "No usage in this month."
    assert [text.text for text in svg.findall(f"{SVG}text") if text.get("class") == "chart-empty"] == [
        "No usage in this month."]
    svg = parse(bar_chart([Bar("25", -0.75), Bar("26", 2.0)], title="t", chart_id="n"))
    rects = svg.findall(f"{SVG}rect")
    assert float(rects[0].get("height")) == 0 and rects[0].find(f"{SVG}title").text == "25: -0.8"
