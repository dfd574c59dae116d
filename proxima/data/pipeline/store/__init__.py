"""Durable runs (R13): record runs, resume after a crash, reuse results.

``SQLiteStore(path)`` is the embedded default, ``MemoryStore()`` the same
semantics in memory; :class:`Store` and :class:`RunJournal` are the protocol
another backend implements. ``keys`` holds the key functions (code
versions, value fingerprints, Hamilton-style stage keys).
"""

from ._errors import ResumeConflictError as ResumeConflictError
from ._errors import RunNotFoundError as RunNotFoundError
from ._errors import StoreError as StoreError
from ._errors import StoreWarning as StoreWarning
from ._errors import UnfingerprintableError as UnfingerprintableError
from ._signing import ENV_KEY as ENV_KEY
from .base import Lookup as Lookup
from .base import Restored as Restored
from .base import RunInfo as RunInfo
from .base import RunJournal as RunJournal
from .base import Store as Store
from .codecs import Codec as Codec
from .codecs import JsonCodec as JsonCodec
from .codecs import PickleCodec as PickleCodec
from .keys import code_version as code_version
from .keys import fingerprint as fingerprint
from .keys import graph_fingerprint as graph_fingerprint
from .keys import register_fingerprint as register_fingerprint
from .keys import stage_keys as stage_keys
from .keys import stage_version as stage_version
from .memory import MemoryStore as MemoryStore
from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "ENV_KEY",
    "Codec",
    "JsonCodec",
    "Lookup",
    "MemoryStore",
    "PickleCodec",
    "Restored",
    "ResumeConflictError",
    "RunInfo",
    "RunJournal",
    "RunNotFoundError",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreWarning",
    "UnfingerprintableError",
    "code_version",
    "fingerprint",
    "graph_fingerprint",
    "register_fingerprint",
    "stage_keys",
    "stage_version",
]
