"""Typed thresholds are what the recipe holds (issue 10 item 2): on a float image a value
finer than the slider's step is kept as it is; on an integer image it is a whole number."""

import pytest

from callbacks.params import _snap, control_values, integer_image, next_state
from components import ids

FLOAT = {"id": "f" * 32, "min": 0.031, "max": 0.968, "slider": [0.0, 1.0], "step": 0.001,
         "vmin": 0.3, "vmax": 0.7, "dtype": "float32"}
UINT16 = {"id": "u" * 32, "min": 3000.0, "max": 42000.0, "step": 1.0, "vmin": 10000,
          "vmax": 30000, "dtype": "uint16"}


def _typed(meta, vmin, vmax):
    history = next_state(ids.IMAGE, None, meta, {})[0]
    new, message = next_state(ids.THRESHOLDS, history, meta, {"thresholds": [vmin, vmax]})
    return new["states"][new["index"]]["markers"], message, new


@pytest.mark.parametrize("value", [0.12345, 0.1234567, 0.5, 0.0001, 0.123])
def test_a_float_images_threshold_is_kept_as_typed(value):
    assert _snap(value, FLOAT) == value


def test_float_noise_is_removed_not_the_typed_digits():
    assert _snap(0.1 + 0.2, FLOAT) == 0.3
    assert _snap(0.123456789012, FLOAT) == 0.123456789012


@pytest.mark.parametrize("value, held", [(99.6, 100.0), (100.5, 101.0), (100.4, 100.0),
                                         (12345.0, 12345.0)])
def test_an_integer_images_threshold_is_a_whole_number(value, held):
    assert _snap(value, UINT16) == held


def test_older_metadata_without_a_dtype():
    assert integer_image({"min": 1.0, "max": 252.0, "step": 1.0})
    assert not integer_image({"min": 0.0, "max": 1.0, "step": 0.001})
    assert not integer_image({"min": 0.0, "max": 1.0, "step": 1.0, "dtype": "float64"})


def test_a_typed_pair_goes_through_the_history_and_the_controls_show_it():
    markers, message, history = _typed(FLOAT, 0.12345, 0.7)
    assert message == "" and markers == {"vmin": 0.12345, "vmax": 0.7}
    # the slider is set to the recipe's value (its thumb shows the nearest position)
    assert control_values(history, FLOAT)["thresholds"] == [0.12345, 0.7]
    assert control_values(history, FLOAT)["step"] == 0.001


def test_a_typed_pair_on_a_16_bit_image():
    markers, message, _ = _typed(UINT16, 12345.6, 30000)
    assert message == "" and markers == {"vmin": 12346.0, "vmax": 30000.0}


def test_a_typed_vmin_above_vmax_is_refused_with_the_values_typed():
    markers, message, _ = _typed(FLOAT, 0.75, 0.7)
    assert markers == {"vmin": 0.3, "vmax": 0.7}
    assert "vmin (0.75) must be below vmax (0.7)" in message


def test_a_refused_typed_value_is_quoted_as_typed():
    markers, message, _ = _typed(FLOAT, 0.030512, 0.7)
    assert markers == {"vmin": 0.3, "vmax": 0.7}
    assert "no pixel is below vmin = 0.030512 (the darkest pixel is 0.031)" in message, message
    _, message, _ = _typed(UINT16, 12000, 42000.4)
    assert "no pixel is above vmax = 42,000 (the brightest pixel is 42,000)" in message, message


@pytest.mark.parametrize("value, text", [(0.12345, "0.12345"), (1234.56, "1,234.56"),
                                         (0.29101560765411705, "0.291"), (65535.0, "65,535")])
def test_threshold_text(value, text):
    from callbacks.params import threshold_text

    assert threshold_text(value, "float32") == text


@pytest.mark.parametrize("value, text", [(0.030512, "0.030512"), (-0.5, "-0.5"),
                                         (12345.6, "12,345.6"), (7347.4609375, "7,347")])
def test_threshold_text_keeps_every_typed_digit(value, text):
    from callbacks.params import threshold_text

    assert threshold_text(value, "float32") == text


def test_an_adopted_threshold_is_kept_whole_when_the_other_one_moves():
    """Issue 10 item 4: li adopted as vmin on an integer image (94.63159073954759) is what
    the recipe holds; a vmax typed, stepped or dragged next (the pair comes with vmin as the
    slider holds it) leaves it whole (it was snapped to 95); vmin itself moved is snapped."""
    meta = {"id": "c" * 32, "min": 1.0, "max": 252.0, "step": 1.0, "vmin": 83, "vmax": 131,
            "dtype": "uint8"}
    history = next_state(ids.IMAGE, None, meta, {})[0]
    li = 94.63159073954759
    adopt = {"type": ids.ADOPT, "method": "li", "as": "vmin", "value": li}
    history, message = next_state(adopt, history, meta, {})
    assert message == "" and history["states"][-1]["markers"] == {"vmin": li, "vmax": 131}
    new, message = next_state(ids.THRESHOLDS, history, meta, {"thresholds": [li, 140.4]})
    assert message == "" and new["states"][-1]["markers"] == {"vmin": li, "vmax": 140.0}
    new, _ = next_state(ids.THRESHOLDS, history, meta, {"thresholds": [90.4, 131]})
    assert new["states"][-1]["markers"] == {"vmin": 90.0, "vmax": 131}
