"""The "argument not given" marker of the builder's ``with_*`` methods.

``None`` cannot mean "leave as is" there, since ``None`` is a real value
("no limit") for timeouts; ``UNSET`` is the default instead.
"""

from __future__ import annotations

import enum

__all__ = ["UNSET", "Unset"]


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


#: Default of the builder's ``with_*`` arguments: keep the current value.
UNSET = Unset.UNSET
