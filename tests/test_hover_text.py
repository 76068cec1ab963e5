"""The line under the segmentation names the pixel under the pointer, its intensity written
for a person and its region (issue 10 items 3 and 9): 65,535 on a 16-bit image, no raw
float digits on a float image."""

from types import SimpleNamespace

import numpy as np
import pytest

from callbacks.measure import hover_text


def _services(image, labels):
    return SimpleNamespace(image=lambda sid, iid: image,
                           run=lambda sid, iid, recipe: SimpleNamespace(labels=labels))


def _text(image, labels, x, y):
    meta = {"id": "a" * 32, "ndim": 2, "dtype": str(image.dtype), "shape": list(image.shape)}
    return hover_text(_services(image, labels), "s", meta, {}, 0, 0, {"x": x, "y": y})


@pytest.mark.parametrize("dtype, value, shown", [
    (np.uint16, 65535, "65,535"), (np.uint16, 7347, "7,347"), (np.uint8, 131, "131"),
    (np.float64, 0.29101560765411705, "0.291"), (np.float32, 0.11914061789866537, "0.1191"),
    (np.float64, 12345.678, "12,346"), (np.float64, 0.0, "0")])
def test_the_intensity_is_written_for_a_person(dtype, value, shown):
    image = np.zeros((4, 5), dtype)
    image[2, 3] = value
    labels = np.zeros((4, 5), np.int32)
    labels[2, 3] = 7
    assert _text(image, labels, 3, 2) == f"x 3, y 2 · intensity {shown} · region 7"
    assert _text(image, labels, 0, 0).endswith("· background")
    assert _text(image, labels, 9, 0) == ""
