"""Eager validation of user-facing arguments, with one message format.

Every check raises :class:`ParameterError` (a :class:`ValueError`) or, for a
value of the wrong type, :class:`ParameterTypeError` (a :class:`TypeError`).
The message always names the parameter, the function it was given to, the rule
it breaks and the value received::

    The 'eta' parameter of critical_batch_size must be < 2/L = 2 (Proposition 1 needs eta < 2/L). Got eta=3.0 instead.

Command-line front ends catch :class:`ParameterError` and print the message as
one line (exit code 2).

>>> check_positive(0.5, "eps", "steps_to_eps")
0.5
>>> check_positive(0.0, "eps", "steps_to_eps")
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'eps' parameter of steps_to_eps must be > 0. Got eps=0.0 instead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "ParameterError",
    "ParameterTypeError",
    "check_choice",
    "check_finite",
    "check_greater",
    "check_in_range",
    "check_integer",
    "check_positive",
    "check_real",
    "fail",
]


class ParameterError(ValueError):
    """An argument has the right type but breaks a rule of the theory or the API."""


class ParameterTypeError(TypeError, ParameterError):
    """An argument has the wrong type (also a :class:`ParameterError`)."""


def _fmt(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 6:
            return np.array2string(value, separator=", ")
        return f"array(shape={value.shape}, min={np.nanmin(value)!r}, max={np.nanmax(value)!r})"
    return repr(value)


def fail(name: str, where: str, rule: str, value, *, reason: str | None = None, cls=ParameterError):
    """Raise the project's one error format for parameter ``name`` of ``where``.

    The error also carries ``parameter``, ``where``, ``rule``, ``value`` and ``reason``, so that a
    front end can report it under its own name for the parameter (a command-line flag).
    """
    why = f" ({reason})" if reason else ""
    err = cls(f"The '{name}' parameter of {where} must be {rule}{why}. Got {name}={_fmt(value)} instead.")
    err.parameter, err.where, err.rule, err.value, err.reason = name, where, rule, value, reason
    raise err


def check_real(value, name: str, where: str, *, allow_array: bool = False):
    """Return ``value`` as a finite float (or float array when ``allow_array``)."""
    if isinstance(value, bool) or value is None:
        fail(name, where, "a real number", value, cls=ParameterTypeError)
    if allow_array and not isinstance(value, numbers.Real):
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            fail(name, where, "a real number or an array of real numbers", value, cls=ParameterTypeError)
        if arr.dtype == object:
            fail(name, where, "a real number or an array of real numbers", value, cls=ParameterTypeError)
        if not np.all(np.isfinite(arr)):
            fail(name, where, "finite", value)
        return arr
    if not isinstance(value, numbers.Real):
        fail(name, where, "a real number", value, cls=ParameterTypeError)
    value = float(value)
    if not math.isfinite(value):
        fail(name, where, "finite", value)
    return value


def check_finite(value, name: str, where: str, *, allow_array: bool = False):
    """Alias of :func:`check_real`: a finite real number."""
    return check_real(value, name, where, allow_array=allow_array)


def check_positive(value, name: str, where: str, *, allow_array: bool = False, reason: str | None = None):
    """A finite real number > 0."""
    value = check_real(value, name, where, allow_array=allow_array)
    if np.any(np.asarray(value) <= 0):
        fail(name, where, "> 0", value, reason=reason)
    return value


def check_greater(value, bound: float, name: str, where: str, *, strict: bool = True,
                  allow_array: bool = False, reason: str | None = None, bound_text: str | None = None):
    """A finite real number > ``bound`` (or >= when ``strict`` is False)."""
    value = check_real(value, name, where, allow_array=allow_array)
    arr = np.asarray(value)
    bad = np.any(arr <= bound) if strict else np.any(arr < bound)
    if bad:
        op = ">" if strict else ">="
        fail(name, where, f"{op} {bound_text or _num(bound)}", value, reason=reason)
    return value


def check_in_range(value, low: float | None, high: float | None, name: str, where: str, *,
                   low_strict: bool = False, high_strict: bool = True, allow_array: bool = False,
                   reason: str | None = None, high_text: str | None = None):
    """A finite real number in the interval given by ``low`` and ``high``."""
    value = check_real(value, name, where, allow_array=allow_array)
    arr = np.asarray(value)
    parts = []
    bad = False
    if low is not None:
        parts.append(f"{'>' if low_strict else '>='} {_num(low)}")
        bad |= bool(np.any(arr <= low) if low_strict else np.any(arr < low))
    if high is not None:
        parts.append(f"{'<' if high_strict else '<='} {high_text or _num(high)}")
        bad |= bool(np.any(arr >= high) if high_strict else np.any(arr > high))
    if bad:
        fail(name, where, " and ".join(parts), value, reason=reason)
    return value


def check_integer(value, name: str, where: str, *, minimum: int | None = None, reason: str | None = None) -> int:
    """An integer (Python or numpy; a float with an integral value is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, where, "an integer", value, cls=ParameterTypeError)
    value = int(value)
    if minimum is not None and value < minimum:
        fail(name, where, f">= {minimum}", value, reason=reason)
    return value


def check_choice(value, choices, name: str, where: str):
    """One of ``choices`` (strings)."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        fail(name, where, f"one of {listed}", value)
    return value


def _num(x: float) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return f"{x:.6g}" if isinstance(x, float) else str(x)
