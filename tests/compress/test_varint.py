"""LEB128 varints of the .prn coding tables: exact round trip, hostile tables raise the format error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.compress.varint import pack_varints, unpack_varints
from prunus.errors import FormatError


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, (1 << 63) - 1), max_size=60))
def test_round_trip_is_exact(values):
    data = pack_varints(values)
    assert data.dtype == np.uint8
    assert unpack_varints(data).tolist() == values


def test_sizes_are_leb128():
    # one byte below 128, two below 16384: a 4-bit count table is ~2 bytes a value, not 8
    assert [pack_varints([v]).size for v in (0, 127, 128, 16383, 16384, (1 << 63) - 1)] == [1, 1, 2, 2, 3, 9]


def test_bad_tables_raise():
    with pytest.raises(FormatError, match="ends inside a value"):
        unpack_varints(np.array([0x05, 0x80], np.uint8))
    with pytest.raises(FormatError, match="longer than 9 bytes"):
        unpack_varints(np.array([0xFF] * 9 + [0x01], np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*63\)"):
        pack_varints([-1])
