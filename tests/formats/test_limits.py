"""What a file may declare: an input shape must be three positive integers (a zero dimension is refused)."""

from __future__ import annotations

import json

import pytest

import prunus
from prunus.errors import FormatError, PrunusError
from prunus.formats.limits import check_input_shape


@pytest.mark.parametrize(
    "shape",
    [[1, 0, 28], [0, 28, 28], [1, 28, 0], [-1, 28, 28], [], [1] * 7, [1.0, 28, 28], [True, 28, 28], "128",
     [[1, 28, 28], [1, 0]], {"x": [1, -2]}],
)  # fmt: skip
def test_an_input_shape_without_positive_integers_of_rank_1_to_6_is_refused(shape):
    with pytest.raises(FormatError, match="positive integers"):
        check_input_shape(shape)


def test_valid_input_shapes_pass_as_tuples():
    assert check_input_shape([1, 28, 28]) == (1, 28, 28)
    assert check_input_shape((3, 1, 1)) == (3, 1, 1)
    assert check_input_shape([2, 16]) == (2, 16)  # a Conv1d model's (C, L)
    assert check_input_shape([[3, 8, 8], [2, 16]]) == ((3, 8, 8), (2, 16))  # several inputs
    assert check_input_shape({"x": [3, 8, 8]}) == {"x": (3, 8, 8)}


def test_a_model_file_declaring_a_zero_dimension_is_refused(tmp_path):
    prunus.save(prunus.create_model("lenet5", in_channels=1), tmp_path, input_shape=(1, 28, 28))
    header = json.loads((tmp_path / "model.json").read_text())
    header["input_shape"] = [1, 0, 28]
    (tmp_path / "model.json").write_text(json.dumps(header))
    with pytest.raises(PrunusError, match="input_shape must be"):
        prunus.load(tmp_path)
