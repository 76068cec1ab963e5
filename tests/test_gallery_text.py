"""The threshold gallery's tiles (callbacks.discovery): values written as the text under the
slider writes them once adopted, titles that fit a tile."""

import pytest

from callbacks.discovery import threshold_text, tile_title


@pytest.mark.parametrize("value, text", [
    (25154.0, "25,154"), (8695.0, "8,695"), (8695.4, "8,695.4"), (130.0, "130"),
    (0.4765625, "0.4766"), (0.29101560765411705, "0.291"), (12.5, "12.5"),
    (0.0004123, "4.123e-4"), (-0.01, "-0.01"), (1234.96, "1,235")])
def test_threshold_values_for_a_person(value, text):
    assert threshold_text(value) == text


def test_a_tile_title_names_the_method_and_links_its_function():
    strong, _line, link = tile_title("triangle")
    assert strong.children == "triangle"
    assert link.children.children == "threshold_triangle"
    assert link.href.endswith("skimage.filters.html#skimage.filters.threshold_triangle") or \
        "threshold_triangle" in link.href
    assert link.title.startswith("skimage.filters.threshold_triangle — ")
