"""The decimal parser of the readers against Python's ``float()`` (correctly rounded)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ftrl_core.readers.numparse import (
    NUM_OK,
    NUM_RANGE,
    NUM_SYNTAX,
    POW5,
    POW10,
    eisel_lemire,
    parse_number,
)


def parse(text: str, strict: bool = True) -> tuple[int, float, int]:
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    status, value, end = parse_number(buf, 0, buf.size, strict, POW5, POW10)
    return int(status), float(value), int(end)


def check(text: str, strict: bool = True) -> None:
    want = float(text)
    status, value, end = parse(text, strict)
    if abs(want) == float("inf"):
        assert status == NUM_RANGE, text
        return
    assert (status, end) == (NUM_OK, len(text)), text
    assert value == want and np.signbit(value) == np.signbit(want), (text, value, want)


def exact_decimal(value: Fraction) -> str:
    """The exact decimal expansion of a dyadic rational (every double and midpoint is one)."""
    k = value.denominator.bit_length() - 1
    assert value.denominator == 1 << k
    digits = str(value.numerator * 5**k).rjust(k + 1, "0")
    return digits if k == 0 else f"{digits[:-k]}.{digits[-k:]}"


def test_random_decimals_round_like_float() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20_000):  # the digits printers produce
        bits = rng.integers(0, 2**63, dtype=np.int64).astype(np.uint64)
        v = float(bits.view(np.float64)) * (-1) ** int(rng.integers(0, 2))
        if np.isfinite(v):
            check(repr(v))
            check(f"{v:.{rng.integers(1, 25)}e}")
    for _ in range(20_000):  # any mantissa length and exponent, also past 19 digits
        digits = "".join(str(d) for d in rng.integers(0, 10, rng.integers(1, 40)))
        exp = int(rng.integers(-360, 330))
        check(f"{digits.lstrip('0') or '0'}e{exp}")
        cut = int(rng.integers(0, len(digits)))
        check(f"-{digits[:cut].lstrip('0') or '0'}.{digits[cut:] or '0'}e{exp}")
        check(f"{digits}", strict=False)  # leading zeros are fine outside JSON


@pytest.mark.parametrize("text", [
    "0", "-0", "0.0", "1", "-1", "0.1", "1e23", "8.98846567431158e307", "9007199254740993",
    "9007199254740992.5", "2.2250738585072011e-308", "2.2250738585072014e-308",
    "2.2250738585072012e-308", "4.9406564584124654e-324", "2.4703282292062327e-324",
    "2.4703282292062328e-324", "1e-400", "1.7976931348623157e308", "1.7976931348623158e308",
    "1.7976931348623159e308", "1e309", "7.3177701707893310e+15", "1.00000000000000011102230246",
    "123456789012345678901234567890", "0.000000000000000000000000000001", "3.14159265358979323846",
    "1" * 400, "0." + "0" * 400 + "1e400", "1e-1000000000000",
])
def test_hard_cases(text: str) -> None:
    check(text)


def test_exact_midpoints_round_half_to_even() -> None:
    rng = np.random.default_rng(8)
    xs = [5e-324, 2.2250738585072009e-308, 2.2250738585072014e-308, 1.0, 9007199254740992.0,
          1.7976931348623157e308, 0.1, 1e23, 3.0e22, 123456789.0]
    xs += [float(b.view(np.float64)) for b in rng.integers(1, 2**62, 60, dtype=np.int64)]
    for x in xs:
        mid = Fraction(x) + Fraction(math.ulp(x)) / 2  # halfway to the next double up
        text = exact_decimal(mid)
        check(text)  # a tie: to the even mantissa (inf above the largest double)
        if "." in text:
            above, below = text + "0001", f"{text[:-1]}{int(text[-1]) - 1}9999"
        else:
            above, below = text + ".0001", f"{int(text) - 1}.9999"
        check(above)
        check(below)
        check(f"{text}e0")


@pytest.mark.parametrize(("text", "strict", "status", "end"), [
    ("01", True, NUM_SYNTAX, 2), ("1.", True, NUM_SYNTAX, 2), (".5", True, NUM_SYNTAX, 0),
    ("+1", True, NUM_SYNTAX, 0), ("-", True, NUM_SYNTAX, 1), ("1e", True, NUM_SYNTAX, 2),
    ("1e+", True, NUM_SYNTAX, 3), ("NaN", True, NUM_SYNTAX, 0), ("inf", False, NUM_SYNTAX, 0),
    ("-Infinity", True, NUM_SYNTAX, 1), (".", False, NUM_SYNTAX, 1),
    ("1.", False, NUM_OK, 2), (".5", False, NUM_OK, 2), ("+1", False, NUM_OK, 2),
    ("007", False, NUM_OK, 3), ("12abc", True, NUM_OK, 2), ("1.5e3x", True, NUM_OK, 5),
])
def test_grammar(text: str, strict: bool, status: int, end: int) -> None:
    got = parse(text, strict)
    assert (got[0], got[2]) == (status, end)


def test_eisel_lemire_matches_float_on_19_digit_mantissas() -> None:
    rng = np.random.default_rng(9)
    for _ in range(20_000):
        w = int(rng.integers(1, 10**18)) * int(rng.integers(1, 10))
        q = int(rng.integers(-342, 309))
        want = float(f"{w}e{q}")
        assert eisel_lemire(q, np.uint64(w), POW5) == want, (w, q)
