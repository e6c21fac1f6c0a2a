"""Value checks shared by every layer: DRSOM and its parts, the optimizer factory, the config
boundary and the data layer.

Each check refuses a value in one line, ``<prefix><name> must be <accepted>, got <value!r>`` (a
name outside a fixed set: ``<prefix><name>=<value!r> is not one of ...``), raised as the caller's
error class. The caller keeps its own prefix: DRSOM's lines start ``DRSOM: ``, the config
boundary's and the factory's name the key (``optimizer.lr``, ``trainer.epochs``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any


class ConfigError(Exception):
    """A configuration value the user can fix; the message is one line."""


# DRSOM's lines, and its parts' (directions, curvature, controller), start with this
DRSOM = "DRSOM: "

POSITIVE = "a positive finite number"
NON_NEGATIVE = "a finite number >= 0"
UNIT = "a number in [0, 1)"


def is_real(value: Any) -> bool:
    """A real number; a bool is not a number here (``True`` as a learning rate is a slip)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def is_integer(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def in_unit(v: float) -> bool:
    return 0.0 <= v < 1.0


def is_positive(v: float) -> bool:
    return 0.0 < v < math.inf


def is_non_negative(v: float) -> bool:
    return 0.0 <= v < math.inf


def refusal(
    name: str, value: Any, accepted: str, *, prefix: str = "", error: type = ValueError
) -> Exception:
    """The one-line error for ``value``; raised by the checks below, or by a caller's own test."""
    return error(f"{prefix}{name} must be {accepted}, got {value!r}")


def real(
    name: str,
    value: Any,
    accepted: str,
    ok: Callable[[float], bool],
    *,
    prefix: str = "",
    error: type = ValueError,
) -> None:
    """A real number for which ``ok`` holds."""
    if not is_real(value) or not ok(float(value)):
        raise refusal(name, value, accepted, prefix=prefix, error=error)


def positive(name: str, value: Any, *, prefix: str = "", error: type = ValueError) -> None:
    real(name, value, POSITIVE, is_positive, prefix=prefix, error=error)


def integer(
    name: str,
    value: Any,
    low: int = 1,
    high: int | None = None,
    *,
    accepted: str | None = None,
    prefix: str = "",
    error: type = ValueError,
) -> None:
    """An integer in ``[low, high]`` (no upper end without ``high``)."""
    if not is_integer(value) or value < low or (high is not None and value > high):
        if accepted is None:
            accepted = "a positive integer" if low == 1 else f"an integer >= {low}"
            if high is not None:
                accepted = f"an integer in [{low}, {high}]"
        raise refusal(name, value, accepted, prefix=prefix, error=error)


def boolean(name: str, value: Any, *, prefix: str = "", error: type = ValueError) -> None:
    if not isinstance(value, bool):
        raise refusal(name, value, "true or false", prefix=prefix, error=error)


def unit_pair(
    name: str, value: Any, accepted: str, *, prefix: str = "", error: type = ValueError
) -> tuple[float, float]:
    """A pair of numbers in [0, 1) (Adam's ``betas``), as floats."""
    pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if not (pair and all(is_real(b) and in_unit(float(b)) for b in value)):
        raise refusal(name, value, accepted, prefix=prefix, error=error)
    return float(value[0]), float(value[1])


def one_of(
    name: str,
    value: Any,
    accepted: Sequence[str],
    *,
    prefix: str = "",
    error: type = ValueError,
    quoted: bool = True,
) -> None:
    """A name from a fixed set; ``quoted`` lists the accepted names as Python strings."""
    if not isinstance(value, str) or value not in accepted:
        names = ", ".join(repr(a) if quoted else a for a in accepted)
        raise error(f"{prefix}{name}={value!r} is not one of {names}")
