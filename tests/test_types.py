"""Argument coercion: loose input becomes the declared type, or a fault naming the argument."""

import dataclasses
from typing import Any, Optional

import pytest

from apiserver.errors import InvalidArgument
from apiserver.types import coerce, spec_from_hint, to_plain


@dataclasses.dataclass
class Rec:
    ip: str
    gate: Optional[str]


@pytest.mark.parametrize("hint, value, expected", [
    (int, "42", 42), (int, 7, 7), (int, True, 1), (bool, "true", True), (bool, "0", False), (bool, 1, True),
    (float, "1.5", 1.5), (str, 5, "5"), (str, False, "false"), (Optional[str], None, None),
    (list[int], ["1", 2], [1, 2]), (list[str], "solo", ["solo"]), (list[int], {"0": "1", "1": "2"}, [1, 2]),
    (dict, {"a": 1}, {"a": 1}), (Any, [1, "x"], [1, "x"]),
    (Rec, {"ip": "10.0.0.1", "gate": None}, Rec("10.0.0.1", None)),
])
def test_coerce_accepts(hint, value, expected):
    """Values that fit (possibly as strings from untyped dialects) are converted."""
    assert coerce(value, spec_from_hint(hint), "arg") == expected


@pytest.mark.parametrize("hint, value", [
    (int, "forty"), (int, 1.5), (int, "99999999999999999999999"), (int, -(2 ** 63) - 1),
    (bool, "maybe"), (bool, 2), (str, None), (list[int], ["x"]),
    (Rec, {"ip": "1.2.3.4", "gate": None, "extra": 1}), (Rec, "text"), (dict, 5),
])
def test_coerce_refuses_with_argument_name(hint, value):
    """A value that does not fit raises InvalidArgument naming where it was."""
    with pytest.raises(InvalidArgument, match="my_arg"):
        coerce(value, spec_from_hint(hint), "my_arg")


def test_to_plain_turns_records_into_dicts():
    """Records in return values become plain dicts for encoders."""
    assert to_plain([Rec("1.2.3.4", "UI")]) == [{"ip": "1.2.3.4", "gate": "UI"}]
