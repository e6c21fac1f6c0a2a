"""The one-line refusal of a value outside a fixed set, shared by DRSOM and its parts."""

from __future__ import annotations

from collections.abc import Sequence


def one_of(name: str, value, accepted: Sequence[str]) -> None:
    """Refuse ``value`` unless it is one of the names ``accepted``, in one ``DRSOM:`` line."""
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(
            f"DRSOM: {name}={value!r} is not one of {', '.join(repr(a) for a in accepted)}"
        )
