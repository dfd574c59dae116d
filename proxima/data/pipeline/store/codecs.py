"""How a stage's value becomes bytes in a store, and back (R13.2).

A codec is any object with a ``name`` and ``encode``/``decode``; the name is
written beside every value, and a store decodes only the values written by
its own codec, so a store opened with :class:`JsonCodec` never unpickles.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["Codec", "JsonCodec", "PickleCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back. ``encode`` raises for a value it
    cannot represent (the stage is then recorded without its value)."""

    @property
    def name(self) -> str: ...
    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...


@attrs.frozen
class PickleCodec:
    """The default: any picklable value, restored as an equal copy.

    Unpickling runs code chosen by whoever wrote the bytes: a store file
    without a key is trusted input, like any pickle file (see the docs'
    security note); with a key a value is unpickled only once its
    signature matched.
    """

    protocol: int = pickle.HIGHEST_PROTOCOL

    @property
    def name(self) -> str:
        return "pickle"

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)  # signed or trusted: see the class docstring


@attrs.frozen
class JsonCodec:
    """Values as JSON text: safe to read from an untrusted file, and
    readable by other tools. Only JSON's own types survive: a tuple comes
    back as a list, dict keys as strings; anything else (a set, a
    datetime...) cannot be encoded, and the stage is stored without value."""

    @property
    def name(self) -> str:
        return "json"

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, allow_nan=True, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))
