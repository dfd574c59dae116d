"""HMAC-SHA256 signatures of stored values (R13.6).

A signature covers the value's bytes and where they belong (the run that
computed them, the stage, its key, the codec), so a signed value copied
into another row, or under another codec, no longer verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import attrs

__all__ = ["ENV_KEY", "Signer", "signer_for"]

#: The environment variable read when no ``key=`` is given.
ENV_KEY = "PROXIMA_STORE_KEY"


def _framed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


@attrs.frozen(repr=False)
class Signer:
    """Signs and checks values with one secret key (never shown in a repr)."""

    key: bytes

    def __repr__(self) -> str:
        return "Signer(key=<hidden>)"

    def sign(self, *, run_id: str, stage_id: str, key: str, codec: str, value: bytes) -> bytes:
        message = _framed(
            b"proxima-store-v1",
            run_id.encode(),
            stage_id.encode(),
            key.encode(),
            codec.encode(),
            value,
        )
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def verify(
        self,
        signature: bytes | None,
        *,
        run_id: str,
        stage_id: str,
        key: str,
        codec: str,
        value: bytes,
    ) -> bool:
        if signature is None:
            return False
        expected = self.sign(run_id=run_id, stage_id=stage_id, key=key, codec=codec, value=value)
        return hmac.compare_digest(expected, signature)


def signer_for(key: str | bytes | None) -> Signer | None:
    """The signer for ``key=``, else for ``$PROXIMA_STORE_KEY``, else none."""
    if key is None:
        key = os.environ.get(ENV_KEY) or None
        if key is None:
            return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be str, bytes or None, got {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    return Signer(bytes(key))
