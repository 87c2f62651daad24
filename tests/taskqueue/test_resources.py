"""The render resources without a server: options, layouts, payload checks."""

from __future__ import annotations

import base64
import itertools

import pytest

from conveyor.kinds.render.document import build_html, safe_file_name
from conveyor.kinds.render.payload import RenderInputError, decode_payload, parse_task
from conveyor.kinds.render.resources import RESOURCES, get_resource
from conveyor.kinds.render.resources.binary_cards import dot_grid
from conveyor.kinds.render.resources.sorting_network import NETWORKS, lane_of
from tests.taskqueue.conftest import render_task


@pytest.mark.parametrize("size", sorted(NETWORKS))
def test_sorting_networks_sort_every_input(size: int) -> None:
    """The 0-1 principle: a network that sorts every 0/1 input sorts every input."""
    for bits in itertools.product([0, 1], repeat=size):
        values = list(bits)
        for layer in NETWORKS[size]:
            for a, b in layer:
                if values[a] > values[b]:
                    values[a], values[b] = values[b], values[a]
        assert values == sorted(values), bits


@pytest.mark.parametrize("count", [1, 2, 4, 8, 16])
def test_dot_grid_places_every_dot_inside(count: int) -> None:
    dots = dot_grid(count, 160, 90)
    assert len(dots) == count
    assert all(d["r"] <= d["x"] <= 160 - d["r"] and d["r"] <= d["y"] <= 90 - d["r"] for d in dots)


def test_at_least_four_resources_with_option_schemas() -> None:
    assert {"binary_cards", "sorting_network", "modulo_clock", "parity_cards"} <= set(RESOURCES)
    assert get_resource("binary_cards").schema() == {
        "display_numbers": {"enum": [True, False], "default": True},
        "black_back": {"enum": [False, True], "default": False},
    }


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (render_task("binary_cards", display_numbers=1), "display_numbers"),
        (render_task("binary_cards", black_back="true"), "black_back"),
        (render_task("modulo_clock", modulo=7), "modulo"),
        (render_task("parity_cards", back_colour="pink"), "back_colour"),
        (render_task("sorting_network", wires=5), "unknown option"),
        (render_task("no_such_thing"), "resource_view"),
        ({**render_task("binary_cards"), "paper_size": "a3"}, "paper_size"),
        ({**render_task("binary_cards"), "copies": 0}, "copies"),
        ({**render_task("binary_cards"), "kind": "task#other"}, "task#other"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_tasks_name_the_problem(payload: object, named: str) -> None:
    with pytest.raises(RenderInputError, match=named):
        build_html(parse_task(payload))


def test_payload_decoding_errors() -> None:
    with pytest.raises(RenderInputError, match="base64"):
        decode_payload("***")
    with pytest.raises(RenderInputError, match="not JSON"):
        decode_payload(base64.b64encode(b"\xff\xfe").decode())


def test_header_text_is_escaped_and_copies_repeat_pages() -> None:
    task = parse_task({**render_task("parity_cards", copies=3), "header_text": "<b>A & B</b>"})
    html, filename = build_html(task)
    assert "&lt;b&gt;A &amp; B&lt;/b&gt;" in html
    assert html.count('<section class="page">') == 6
    assert filename == "Parity Cards (6x6 - black back - a4).pdf"
    assert safe_file_name(filename) == "Parity_Cards_6x6_-_black_back_-_a4.pdf"


def test_the_originals_template_and_css_keys_are_accepted_and_ignored() -> None:
    task = parse_task({**render_task("modulo_clock"), "template": "x.html", "css": "y.css"})
    assert task.options == {}
    html, _ = build_html(task)
    assert "x.html" not in html


@pytest.mark.parametrize("size", sorted(NETWORKS))
def test_comparators_sharing_a_lane_never_overlap(size: int) -> None:
    for layer in NETWORKS[size]:
        lanes = lane_of(layer)
        for (a, b), lane in lanes.items():
            for (c, d), other in lanes.items():
                if (a, b) != (c, d) and lane == other:
                    assert b < c or d < a, (layer, lanes)
