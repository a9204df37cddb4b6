"""Comparing what the student's code produced with what we expect.

Every function raises :class:`grader.errors.CheckFailed` with a message in the
house style (what we found, what we expected, how to fix it) and explains numeric
mismatches like pytest's ``approx``: a shape mismatch first and alone, then the
count of mismatched elements, the largest differences and a few worst indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import CheckFailed

MAX_REPR = 120


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """A capped repr: arrays summarised, long text cut with a note."""
    if isinstance(value, np.ndarray) and value.size > 12:
        with np.printoptions(precision=4, threshold=12, edgeitems=2):
            text = f"array(shape={value.shape}, dtype={value.dtype}) {np.array2string(value)}"
    else:
        try:
            with np.printoptions(precision=4):
                text = repr(value)
        except Exception:  # noqa: BLE001 - rendering must never fail a check
            return "<could not be shown>"
    return text if len(text) <= limit else text[: limit - 16] + " ...(truncated)"


def as_array(found: Any, what: str) -> np.ndarray:
    """The student's value as a float array, or a clear failure."""
    if isinstance(found, dict) and ("__dataframe__" in found or "__series__" in found):
        found = found["values"]
    if isinstance(found, dict) and "__object__" in found:
        raise CheckFailed(f"`{what}` is a {found['__object__']}; expected an array of numbers. "
                          "Return a NumPy array or a TensorFlow tensor.")
    try:
        array = np.asarray(found, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"`{what}` is {short_repr(found)}; expected an array of numbers. "
                          "Return a NumPy array or a TensorFlow tensor.") from None
    return array


def assert_shape(found: Any, shape: Sequence[int | None], *, what: str, fix: str = "") -> np.ndarray:
    array = as_array(found, what)
    expected = tuple(shape)
    ok = array.ndim == len(expected) and all(
        e is None or e == f for e, f in zip(expected, array.shape, strict=False))
    if not ok:
        raise CheckFailed(
            f"`{what}` has shape {tuple(array.shape)}; expected {_shape_text(expected)}. {fix}".strip(),
            expected=_shape_text(expected), found=str(tuple(array.shape)),
        )
    return array


def _shape_text(shape: tuple) -> str:
    inner = ", ".join("None" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def assert_allclose(found: Any, expected: Any, *, what: str, rtol: float = 1e-4,
                    atol: float = 1e-6, fix: str = "") -> None:
    """Elementwise closeness, ``|found - expected| <= atol + rtol * |expected|``."""
    expected = np.asarray(expected, dtype=np.float64)
    array = assert_shape(found, expected.shape, what=what, fix=fix)
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    if not np.all(np.isfinite(array)) and np.all(np.isfinite(expected)):
        bad = int(np.sum(~np.isfinite(array)))
        raise CheckFailed(
            f"`{what}` contains {bad} NaN or infinite value(s); expected finite numbers. "
            f"{fix or 'Look for a log of 0, a division by 0 or an overflowing exp.'}".strip(),
            expected=short_repr(expected), found=short_repr(array), tolerance=tolerance)
    difference = np.abs(array - expected)
    allowed = atol + rtol * np.abs(expected)
    mismatched = difference > allowed
    if not np.any(mismatched):
        return
    count = int(mismatched.sum())
    relative = difference / np.where(expected == 0, np.inf, np.abs(expected))
    worst = np.argsort(difference, axis=None)[::-1][:3]
    worst_text = "; ".join(
        f"at {tuple(int(i) for i in np.unravel_index(flat, array.shape))}: "
        f"found {array.flat[flat]:.6g}, expected {expected.flat[flat]:.6g}"
        for flat in worst) if array.ndim else f"found {array.item():.6g}, expected {expected.item():.6g}"
    raise CheckFailed(
        f"`{what}` differs from the expected values ({tolerance}). "
        f"Mismatched elements: {count} / {array.size}. {fix}".strip(),
        detail=f"Max absolute difference {difference.max():.3g}, max relative difference "
               f"{np.max(relative):.3g}; {worst_text}.",
        expected=short_repr(expected), found=short_repr(array), tolerance=tolerance)


@dataclass(frozen=True)
class Band:
    """An acceptance band for a trained-quality metric, calibrated from the reference."""

    metric: str
    low: float
    high: float = float("inf")
    reference_values: tuple[float, ...] = ()
    rule: str = ""

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def assert_in_band(value: Any, band: Band, *, what: str, fix: str) -> dict:
    """A trained-quality metric must fall inside its calibrated band.

    Returns the metric record; a check returns it so that reports can place the
    student's value against the reference distribution."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"`{what}` is {short_repr(value)}; expected a number.") from None
    metric = {"name": band.metric, "value": number, "low": band.low,
              "high": None if band.high == float("inf") else band.high,
              "reference": list(band.reference_values)}
    if not np.isfinite(number) or not band.contains(number):
        bound = f"at least {band.low:.4g}" if band.high == float("inf") else \
            f"between {band.low:.4g} and {band.high:.4g}"
        raise CheckFailed(
            f"{what} is {number:.4g}; expected {bound} (the band measured from the reference "
            f"solution over {len(band.reference_values) or 'several'} seeded runs). {fix}".strip(),
            expected=bound, found=f"{number:.4g}", metric=metric)
    return metric


def assert_equal(found: Any, expected: Any, *, what: str, fix: str = "") -> None:
    if found != expected:
        raise CheckFailed(f"`{what}` is not what was expected. {fix}".strip(),
                          detail=f"Found {short_repr(found)}; expected {short_repr(expected)}.",
                          expected=short_repr(expected), found=short_repr(found))
