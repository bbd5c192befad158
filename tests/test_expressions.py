"""Tests of the safe arithmetic used by description fields."""

from __future__ import annotations

import os

import pytest

from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.expressions import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_LENGTH,
    evaluate,
    evaluate_value,
    to_int,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("-3", -3),
        ("+3", 3),
        ("--3", 3),
        ("  42  ", 42),
        ("1.5", 1.5),
        ("4150-2917", 1233),
        ("10*256", 2560),
        ("7//2", 3),
        ("-7//2", -4),
        ("7/2", 3.5),
        ("10/2", 5.0),
        ("7%3", 1),
        ("-7%3", 2),
        ("(1+2)*3", 9),
        ("1+2*3", 7),
        ("[4150-2917, 10*256, 10*256]", [1233, 2560, 2560]),
        ("[ 4150-2917, 135424, 119808 ]", [1233, 135424, 119808]),
        ("[0, 50*1024, 50*1024]", [0, 51200, 51200]),
        ("(1, 2)", (1, 2)),
        ("(1,)", (1,)),
        ("[]", []),
        ("[1,]", [1]),
        ("[[1, 2], (3, 4)]", [[1, 2], (3, 4)]),
        ("[\n 1,\n 2\n]", [1, 2]),
        ("1_000", 1000),
        (str(INT64_MAX), INT64_MAX),
        (f"-{INT64_MAX}-1", INT64_MIN),
    ],
)
def test_evaluate_allowed(text, expected):
    result = evaluate(text, "shape")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch PWNED')",
        "os",
        "x + 1",
        "abs(-1)",
        "int('3')",
        "(1).real",
        "[1, 2][0]",
        "[i for i in range(3)]",
        "(i for i in range(3))",
        "{1, 2}",
        "{'a': 1}",
        "lambda: 1",
        "'abc'",
        "b'abc'",
        "f'{1}'",
        "2**3",
        "2**10**10",
        "True",
        "False",
        "None",
        "...",
        "1j",
        "1 if 1 else 2",
        "1 < 2",
        "1 and 2",
        "not 1",
        "~1",
        "1 << 3",
        "1 & 3",
        "1 | 3",
        "1 ^ 3",
        "[1] * 3",
        "(1, 2) + (3,)",
        "-[1]",
        "(y := 3)",
        "[*[1, 2]]",
        "",
        "   ",
        "1 +",
        "[1, 2",
        "1; 2",
        "import os",
        "\x00",
    ],
)
def test_evaluate_rejects(text):
    with pytest.raises(DescriptionError) as info:
        evaluate(text, "local_description.shape")
    assert info.value.field == "local_description.shape"
    assert "local_description.shape" in str(info.value)
    assert "expected" in str(info.value) and "found" in str(info.value)


def test_code_injection_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in (
        "__import__('os').system('touch PWNED')",
        "[__import__('os').system('touch PWNED')]",
        "(lambda: __import__('os').system('touch PWNED'))()",
        "().__class__.__base__.__subclasses__()",
    ):
        with pytest.raises(DescriptionError):
            evaluate(text, "shape")
        with pytest.raises(DescriptionError):
            evaluate_value([1, text], "shape")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text", ["1/0", "1//0", "1%0", "1.0/0", "1.5%0.0", "[1, 2/(1-1)]"])
def test_division_by_zero(text):
    with pytest.raises(DescriptionError, match="division by zero") as info:
        evaluate(text, "view_shape")
    assert info.value.field == "view_shape"


@pytest.mark.parametrize(
    "text",
    [
        str(INT64_MAX + 1),
        f"{INT64_MAX}+1",
        f"-{INT64_MAX}-2",
        "99999999999*99999999999",
        "*".join(["99999"] * 500),  # would be a 2500-digit integer without the per-step check
        "1e308*10",
        "1e999",
        "1" * 5000,  # beyond Python's int-from-string digit limit
    ],
)
def test_results_beyond_int64_or_non_finite(text):
    with pytest.raises(DescriptionError) as info:
        evaluate(text, "bounds")
    assert info.value.field == "bounds"


def test_length_cap():
    text = "[" + ", ".join(["1"] * (MAX_LENGTH // 3 + 10)) + "]"
    assert len(text) > MAX_LENGTH
    with pytest.raises(DescriptionError, match="characters"):
        evaluate(text, "shape")
    # Just below the cap is fine.
    ok = "[" + ", ".join(["1"] * ((MAX_LENGTH - 2) // 3)) + "]"
    assert len(ok) <= MAX_LENGTH
    assert evaluate(ok, "shape") == [1] * ((MAX_LENGTH - 2) // 3)


@pytest.mark.parametrize(
    "text",
    [
        "[" * (MAX_DEPTH + 1) + "1" + "]" * (MAX_DEPTH + 1),
        "-" * 2000 + "1",
        "+".join(["1"] * 4000),
        "(" * 4000 + "1" + ")" * 4000,
    ],
)
def test_depth_cap(text):
    with pytest.raises(DescriptionError) as info:
        evaluate(text, "shape")
    assert info.value.field == "shape"


def test_moderate_nesting_is_fine():
    assert evaluate("+".join(["1"] * 30), "x") == 30
    assert evaluate("[" * 10 + "1" + "]" * 10, "x") == [[[[[[[[[[1]]]]]]]]]]
    assert evaluate("(" * 150 + "1" + ")" * 150, "x") == 1  # parentheses add no nodes


def test_non_string_is_an_error():
    with pytest.raises(DescriptionError) as info:
        evaluate(5, "shape")  # type: ignore[arg-type]
    assert info.value.field == "shape"


def test_field_none_still_readable():
    with pytest.raises(DescriptionError) as info:
        evaluate("x")
    assert info.value.field is None
    assert "expression" in str(info.value)


def test_evaluate_value():
    assert evaluate_value([1, "2*3", (4, "5-1")], "f") == [1, 6, (4, 4)]
    assert evaluate_value(7, "f") == 7
    assert evaluate_value(None, "f") is None
    assert evaluate_value({"a": 1}, "f") == {"a": 1}
    with pytest.raises(DescriptionError) as info:
        evaluate_value([1, "a"], "f")
    assert info.value.field == "f"


@pytest.mark.parametrize("value, expected", [(3, 3), (5.0, 5), (-2.0, -2), (INT64_MAX, INT64_MAX)])
def test_to_int_ok(value, expected):
    result = to_int(value, "f")
    assert result == expected and type(result) is int


def test_to_int_numpy_scalar():
    import numpy

    assert to_int(numpy.int64(7), "f") == 7
    assert type(to_int(numpy.float32(2.0), "f")) is int


@pytest.mark.parametrize("value", [2.5, True, False, "3", None, [1], float("nan"), float("inf"), 2**63])
def test_to_int_rejects(value):
    with pytest.raises(DescriptionError) as info:
        to_int(value, "block_shape")
    assert info.value.field == "block_shape"
    assert "block_shape" in str(info.value)
