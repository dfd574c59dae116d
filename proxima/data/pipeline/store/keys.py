"""The keys that say whether a stored result stands for a stage (R13.3, R13.4).

Hamilton-style: a stage's key is a hash of its id, its code version and the
keys of its upstream stages in the order they are declared; a root stage's
key uses the fingerprint of the initial input instead. Values are hashed
once, at the roots; downstream keys are built from upstream keys and never
by hashing a value again, so a key costs the same whatever a stage returns.

Everything here is deterministic across processes and interpreter runs
(whatever ``PYTHONHASHSEED``): nothing goes through ``hash()``, ``id()``,
``repr()`` of arbitrary objects or pickle (whose bytes for an equal value can
differ, the cause of PrefectHQ/prefect#12229). A value of a type this module
does not know raises ``TypeError`` naming the type and where it sits: a key
built from part of a value would claim a match it cannot vouch for (the
wrong cache hit of PrefectHQ/prefect#15861).

What changes :func:`code_version` (and so reruns the stage and everything
downstream of it on resume):

- the bytecode of the handler: any edit to a statement, an expression, a
  constant, the name of a global or attribute it uses, a local variable's
  name, its arguments, ``async``;
- the same for every function and lambda defined inside it;
- its default arguments, the values it closes over, the arguments bound
  by ``functools.partial``: each immutable one (numbers, strings, enums,
  tuples and frozensets of those, frozen attrs/dataclass instances...) by
  its fingerprint, a function by its code, anything else (a list or dict, a
  client, a mutable default) by its type only, so a list that collects
  results does not change the version as it grows;
- its qualified name and module; the class of a callable object or the
  instance of a bound method (by type, not by its attributes);
- the Python minor version (bytecode differs between them).

What does not: comments, blank lines, formatting, moving the function in
its file, its own docstring, the code of other functions it calls (unless
it closes over them), the attributes of a callable object, module-level
values. When that is not enough, give the stage ``Stage(version="...")``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import inspect
import math
import pathlib
import struct
import sys
import types
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import UnfingerprintableError
from .base import Lookup

if TYPE_CHECKING:
    from .._model.stage import Stage

__all__ = [
    "code_version",
    "fingerprint",
    "graph_fingerprint",
    "lookups_for",
    "register_fingerprint",
    "stage_keys",
    "stage_version",
]

_Hasher = Any  # hashlib's object has no public type on 3.10
_registry: dict[type, Callable[[Any], Any]] = {}


def register_fingerprint(cls: type, to_plain: Callable[[Any], Any]) -> None:
    """Teach :func:`fingerprint` a type: ``to_plain(value)`` returns a
    fingerprintable stand-in (e.g. a tuple of its fields) that determines
    the value. Subclasses of ``cls`` use it too."""
    if not isinstance(cls, type):
        raise TypeError(f"register_fingerprint: cls must be a type, got {cls!r}")
    if not callable(to_plain):
        raise TypeError(f"register_fingerprint: to_plain must be callable, got {to_plain!r}")
    _registry[cls] = to_plain


def fingerprint(value: Any) -> str:
    """A hex SHA-256 of ``value`` that is equal for equal values, in any
    process.

    Known: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``,
    ``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict`` (order-free),
    ``set``, ``frozenset``, enum members, attrs and dataclass instances (field
    by field), ``datetime``/``date``/``time``/``timedelta``, ``Decimal``,
    ``Fraction``, ``UUID``, paths, ``range``, numpy arrays and scalars of
    non-object dtype, and whatever :func:`register_fingerprint` taught it.
    Subclasses of the builtins count with their type's name. Anything else
    raises ``TypeError`` naming the type and its place in ``value``.
    """
    hasher = hashlib.sha256(b"proxima-fp-v1\0")
    _feed(hasher, value, "input", set())
    return hasher.hexdigest()


# -- values ---------------------------------------------------------------------------------------


def _type_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _put(hasher: _Hasher, tag: bytes, data: bytes) -> None:
    hasher.update(tag + len(data).to_bytes(8, "big") + data)


def _put_str(hasher: _Hasher, tag: bytes, text: str) -> None:
    _put(hasher, tag, text.encode("utf-8", "surrogatepass"))


def _digest(value: Any, path: str, active: set[int]) -> bytes:
    hasher = hashlib.sha256()
    _feed(hasher, value, path, active)
    return hasher.digest()


_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _feed(hasher: _Hasher, value: Any, path: str, active: set[int]) -> None:
    cls = type(value)
    if cls in _PLAIN_SCALARS:
        _feed_scalar(hasher, value)
        return
    if isinstance(value, enum.Enum):
        _put_str(hasher, b"E", f"{_type_path(cls)}.{value.name}")
        return
    if id(value) in active:
        raise TypeError(f"cannot fingerprint a value that contains itself (at {path})")
    active.add(id(value))
    try:
        _feed_compound(hasher, value, path, active)
    finally:
        active.discard(id(value))


def _feed_scalar(hasher: _Hasher, value: Any) -> None:
    if value is None:
        hasher.update(b"N")
    elif value is True or value is False:
        hasher.update(b"T" if value else b"F")
    elif isinstance(value, int):
        _put(hasher, b"i", value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))
    elif isinstance(value, float):
        _put(hasher, b"f", _float_bytes(value))
    elif isinstance(value, complex):
        _put(hasher, b"c", _float_bytes(value.real) + _float_bytes(value.imag))
    elif isinstance(value, str):
        _put_str(hasher, b"s", value)
    elif isinstance(value, bytes):
        _put(hasher, b"b", value)
    else:
        _put(hasher, b"B", bytes(value))


def _float_bytes(value: float) -> bytes:
    return b"nan" if math.isnan(value) else struct.pack(">d", value)


def _feed_compound(hasher: _Hasher, value: Any, path: str, active: set[int]) -> None:
    cls = type(value)
    plain = _registered(cls)
    if plain is not None:
        _put_str(hasher, b"R", _type_path(cls))
        _feed(hasher, plain(value), f"{path} (as registered)", active)
        return
    if isinstance(value, (*_CONTAINERS, *_PLAIN_SCALARS)):
        _feed_builtin_subclass_or_container(hasher, value, path, active)
        return
    if attrs.has(cls):
        names = [f.name for f in attrs.fields(cls)]
        _feed_fields(hasher, b"A", value, names, path, active)
        return
    if dataclasses.is_dataclass(value):
        names = [f.name for f in dataclasses.fields(value)]
        _feed_fields(hasher, b"D", value, names, path, active)
        return
    text = _known_text(value)
    if text is not None:
        _put_str(hasher, b"x", f"{_type_path(cls)}:{text}")
        return
    if _is_numpy(value):
        _feed_numpy(hasher, value, path)
        return
    raise TypeError(
        f"cannot fingerprint a value of type {_type_path(cls)!r} (at {path}); "
        "use plain data (str, numbers, lists, dicts, attrs/dataclass instances), "
        "or register_fingerprint() for this type"
    )


def _registered(cls: type) -> Callable[[Any], Any] | None:
    for base in cls.__mro__:
        found = _registry.get(base)
        if found is not None:
            return found
    return None


def _feed_builtin_subclass_or_container(
    hasher: _Hasher, value: Any, path: str, active: set[int]
) -> None:
    cls = type(value)
    if cls not in _CONTAINERS:
        # A subclass (a NamedTuple, an OrderedDict, a str subclass): its type
        # counts; state kept beside the builtin's own would be missed.
        if getattr(value, "__dict__", None):
            raise TypeError(
                f"cannot fingerprint a value of type {_type_path(cls)!r} (at {path}): "
                "a subclass of a builtin type with attributes of its own"
            )
        _put_str(hasher, b"S", _type_path(cls))
        base = next(b for b in cls.__mro__ if b in _CONTAINERS or b in _PLAIN_SCALARS)
        if base in _PLAIN_SCALARS:
            plain: Any = base
            _feed_scalar(hasher, plain(value))
            return
    if isinstance(value, (list, tuple)):
        hasher.update((b"l" if isinstance(value, list) else b"t") + len(value).to_bytes(8, "big"))
        for i, item in enumerate(value):
            _feed(hasher, item, f"{path}[{i}]", active)
    elif isinstance(value, dict):
        items = sorted(
            ((_digest(k, f"{path} key {_short(k)}", active), k, v) for k, v in value.items()),
            key=lambda item: item[0],
        )
        hasher.update(b"d" + len(items).to_bytes(8, "big"))
        for key_digest, k, v in items:
            hasher.update(key_digest)
            _feed(hasher, v, f"{path}[{_short(k)}]", active)
    else:
        digests = sorted(_digest(item, f"{path} item", active) for item in value)
        hasher.update((b"e" if isinstance(value, set) else b"z") + len(digests).to_bytes(8, "big"))
        for item_digest in digests:
            hasher.update(item_digest)


def _short(key: Any) -> str:
    if isinstance(key, (str, int, float, bool)) or key is None:
        text = repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"<{type(key).__name__}>"


def _feed_fields(
    hasher: _Hasher, tag: bytes, value: Any, names: list[str], path: str, active: set[int]
) -> None:
    _put_str(hasher, tag, _type_path(type(value)))
    hasher.update(len(names).to_bytes(8, "big"))
    for name in names:
        _put_str(hasher, b"n", name)
        _feed(hasher, getattr(value, name), f"{path}.{name}", active)


def _known_text(value: Any) -> str | None:
    """Stdlib value types with one canonical text."""
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return f"{value.days},{value.seconds},{value.microseconds}"
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, fractions.Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, range):
        return f"{value.start},{value.stop},{value.step}"
    return None


def _is_numpy(value: Any) -> bool:
    module = type(value).__module__
    return (module == "numpy" or module.startswith("numpy.")) and hasattr(value, "dtype")


def _feed_numpy(hasher: _Hasher, value: Any, path: str) -> None:
    dtype = value.dtype
    if dtype.hasobject:
        raise TypeError(
            f"cannot fingerprint a numpy value of object dtype (at {path}): its items are "
            "arbitrary objects"
        )
    _put_str(hasher, b"y", f"{_type_path(type(value))}:{dtype.str}:{tuple(value.shape)}")
    _put(hasher, b"Y", value.tobytes(order="C"))


# -- code -----------------------------------------------------------------------------------------


def code_version(handler: Callable[..., Any]) -> str:
    """A hex SHA-256 of ``handler``'s code (see the module docstring for
    what changes it). ``functools.partial`` and decorated functions
    (``__wrapped__``) are unwrapped, a callable object counts by its class's
    ``__call__``, a ``Stage`` by its handler."""
    hasher = hashlib.sha256(b"proxima-code-v1\0")
    _put_str(hasher, b"p", sys.implementation.cache_tag or sys.implementation.name)
    _feed_callable(hasher, handler, set())
    return hasher.hexdigest()


def stage_version(stage: Stage) -> str:
    """The stage's code version: ``Stage(version=...)`` when given, else
    :func:`code_version` of its handler (each prefixed, so a given version
    never equals a fingerprint)."""
    if stage.version is not None:
        return f"v:{stage.version}"
    return f"c:{code_version(stage.handler)}"


def _feed_callable(hasher: _Hasher, obj: Any, active: set[int]) -> None:
    if id(obj) in active:
        hasher.update(b"<again>")
        return
    active.add(id(obj))
    try:
        _feed_callable_body(hasher, obj, active)
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None and not isinstance(obj, functools.partial):
            hasher.update(b"W")
            _feed_callable(hasher, wrapped, active)
    finally:
        active.discard(id(obj))


def _feed_callable_body(hasher: _Hasher, obj: Any, active: set[int]) -> None:
    from .._model.stage import Stage  # the model layer; no cycle at import time

    if isinstance(obj, Stage):
        _feed_callable(hasher, obj.handler, active)
    elif isinstance(obj, functools.partial):
        hasher.update(b"P")
        _feed_callable(hasher, obj.func, active)
        _feed_loose_all(hasher, b"a", obj.args, active)
        keywords = sorted(obj.keywords.items())
        _feed_loose_all(hasher, b"k", [name for name, _ in keywords], active)
        _feed_loose_all(hasher, b"K", [value for _, value in keywords], active)
    elif inspect.ismethod(obj):
        owner = obj.__self__ if isinstance(obj.__self__, type) else type(obj.__self__)
        _put_str(hasher, b"M", _type_path(owner))
        _feed_callable(hasher, obj.__func__, active)
    elif isinstance(obj, types.FunctionType):
        _feed_function(hasher, obj, active)
    elif isinstance(obj, type):
        _put_str(hasher, b"K", _type_path(obj))
        init = obj.__dict__.get("__init__")
        if isinstance(init, types.FunctionType):
            _feed_function(hasher, init, active)
    elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType)):
        module = getattr(obj, "__module__", None) or type(obj).__module__
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        _put_str(hasher, b"C", f"{module}.{name}")
    else:
        _put_str(hasher, b"O", _type_path(type(obj)))
        call = type(obj).__call__
        if isinstance(call, types.FunctionType):
            _feed_function(hasher, call, active)


def _feed_function(hasher: _Hasher, func: types.FunctionType, active: set[int]) -> None:
    _put_str(hasher, b"F", f"{func.__module__}.{func.__qualname__}")
    _feed_code(hasher, func.__code__, func.__doc__, active)
    _feed_loose_all(hasher, b"a", func.__defaults__ or (), active)
    kwdefaults = sorted((func.__kwdefaults__ or {}).items())
    _feed_loose_all(hasher, b"k", [name for name, _ in kwdefaults], active)
    _feed_loose_all(hasher, b"K", [value for _, value in kwdefaults], active)
    cells = []
    for cell in func.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell (a name assigned later)
            cells.append(_EMPTY_CELL)
    _feed_loose_all(hasher, b"z", cells, active)


_EMPTY_CELL = "<empty cell>"


def _feed_code(
    hasher: _Hasher, code: types.CodeType, doc: Any, active: set[int], strip_doc: bool = True
) -> None:
    # ``co_code`` is the unspecialised bytecode (3.11+ quickening is not in
    # it), without line numbers: moving or reformatting the code keeps it.
    _put(hasher, b"o", code.co_code)
    counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    _put(hasher, b"#", b"".join(n.to_bytes(8, "big") for n in counts))
    for tag, names in (
        (b"g", code.co_names),
        (b"v", code.co_varnames),
        (b"f", code.co_freevars),
        (b"l", code.co_cellvars),
    ):
        hasher.update(tag + len(names).to_bytes(8, "big"))
        for name in names:
            _put_str(hasher, b"s", name)
    consts = code.co_consts
    if strip_doc and consts and consts[0] == doc:
        # A function's first constant is its docstring, or None without one
        # (CPython 3.10-3.13): documentation, not behaviour.
        consts = consts[1:]
    hasher.update(b"c" + len(consts).to_bytes(8, "big"))
    for const in consts:
        if isinstance(const, types.CodeType):
            hasher.update(b"{")
            _feed_code(hasher, const, None, active, strip_doc=False)
            hasher.update(b"}")
        elif const is Ellipsis:
            hasher.update(b"...")
        else:
            _feed_loose(hasher, const, active)


def _feed_loose_all(hasher: _Hasher, tag: bytes, values: Iterable[Any], active: set[int]) -> None:
    values = list(values)
    hasher.update(tag + len(values).to_bytes(8, "big"))
    for value in values:
        _feed_loose(hasher, value, active)


def _feed_loose(hasher: _Hasher, value: Any, active: set[int]) -> None:
    """A value bound to code (a default, a closure cell, a partial's
    argument): a function by its code, an immutable value by its
    fingerprint, anything else (a list that collects results, a client, a
    mutable default) by its type only, so state that changes from run to
    run does not change the version (documented)."""
    if isinstance(value, (types.FunctionType, functools.partial)):
        hasher.update(b"(")
        _feed_callable(hasher, value, active)
        hasher.update(b")")
        return
    if _immutable(value, 0):
        try:
            digest = _digest(value, "value", set())
        except (TypeError, RecursionError):
            pass
        else:
            hasher.update(b"=" + digest)
            return
    _put_str(hasher, b"?", _type_path(type(value)))


_IMMUTABLE_SCALARS = (type(None), bool, int, float, complex, str, bytes, range, enum.Enum)
_IMMUTABLE_VALUES = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    pathlib.PurePath,
)


#: What attrs puts as ``__setattr__`` of a frozen class (attrs has no public
#: "is frozen" test; without it, attrs instances count as mutable).
_ATTRS_FROZEN = getattr(getattr(attrs, "_make", None), "_frozen_setattrs", None) or getattr(
    sys.modules.get("attr._make"), "_frozen_setattrs", None
)


def _immutable(value: Any, depth: int) -> bool:
    """Whether ``value`` cannot change after it was made (as far as we tell)."""
    if depth > 50:
        return False
    if isinstance(value, (*_IMMUTABLE_SCALARS, *_IMMUTABLE_VALUES)):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_immutable(item, depth + 1) for item in value)
    cls = type(value)
    if attrs.has(cls):
        frozen = _ATTRS_FROZEN is not None and getattr(cls, "__setattr__", None) is _ATTRS_FROZEN
        names = [f.name for f in attrs.fields(cls)]
    elif dataclasses.is_dataclass(value):
        frozen = bool(
            getattr(cls, "__dataclass_params__", None) and cls.__dataclass_params__.frozen
        )
        names = [f.name for f in dataclasses.fields(value)]
    else:
        return False
    return frozen and all(_immutable(getattr(value, n), depth + 1) for n in names)


# -- stage keys -----------------------------------------------------------------------------------


def _hash_parts(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        _put_str(hasher, b"s", part)
    return hasher.hexdigest()


def _positions(
    stages: Sequence[Stage], dependencies: Sequence[Sequence[int]] | None
) -> Sequence[Sequence[int]]:
    if dependencies is not None:
        if len(dependencies) != len(stages):
            raise ValueError(
                f"dependencies must hold one entry per stage: {len(dependencies)} for "
                f"{len(stages)} stages"
            )
        return dependencies
    index = {st.stage_id: i for i, st in enumerate(stages)}
    try:
        return [[index[dep] for dep in st.dependencies] for st in stages]
    except KeyError as exc:
        raise ValueError(f"a stage depends on unknown stage {exc.args[0]!r}") from None


def _topological(deps: Sequence[Sequence[int]]) -> list[int]:
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in deps]
    for i, d in enumerate(deps):
        for j in d:
            dependents[j].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    ready.reverse()
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(deps):
        raise ValueError("the dependencies form a cycle")
    return order


def stage_keys(
    stages: Sequence[Stage],
    dependencies: Sequence[Sequence[int]] | None,
    initial_input: Any,
    versions: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every stage's key, by stage id, in stage order.

    ``dependencies[i]`` lists the positions stage ``i`` depends on in
    declared order (``Plan.dependencies``; ``None`` reads them from the
    stages); ``versions`` maps stage id -> code version (default:
    :func:`stage_version`). A root's key is ``H(id, version,
    fingerprint(initial_input))``, any other stage's ``H(id, version,
    upstream keys in order)``.

    Raises :class:`UnfingerprintableError` naming the first root stage when
    the initial input cannot be fingerprinted: the caller decides whether
    that matters (it does with ``resume=`` or a ``cache=True`` stage; a run
    that only records can go on without keys).
    """
    deps = _positions(stages, dependencies)
    known_versions: dict[int, str] = {}  # handler id -> version: one hash per handler
    input_fp: str | None = None
    keys: dict[int, str] = {}
    for i in _topological(deps):
        st = stages[i]
        if versions is not None and st.stage_id in versions:
            version = versions[st.stage_id]
        elif st.version is not None:
            version = stage_version(st)
        else:
            version = known_versions.get(id(st.handler)) or stage_version(st)
            known_versions[id(st.handler)] = version
        if not deps[i]:
            if input_fp is None:
                try:
                    input_fp = fingerprint(initial_input)
                except (TypeError, RecursionError) as exc:
                    raise UnfingerprintableError(st.stage_id, str(exc)) from exc
            keys[i] = _hash_parts("root", st.stage_id, version, input_fp)
        else:
            keys[i] = _hash_parts("node", st.stage_id, version, *(keys[j] for j in deps[i]))
    return {st.stage_id: keys[i] for i, st in enumerate(stages)}


def graph_fingerprint(
    stages: Sequence[Stage], dependencies: Sequence[Sequence[int]] | None = None
) -> str:
    """A hex SHA-256 of the graph's shape: the stage ids in order, each
    with its dependencies' ids in order (not the code: that is in keys)."""
    deps = _positions(stages, dependencies)
    hasher = hashlib.sha256(b"proxima-graph-v1\0")
    for st, d in zip(stages, deps, strict=True):
        _put_str(hasher, b"n", st.stage_id)
        hasher.update(len(d).to_bytes(8, "big"))
        for j in d:
            _put_str(hasher, b"d", stages[j].stage_id)
    return hasher.hexdigest()


def lookups_for(stages: Sequence[Stage], keys: Mapping[str, str], *, resume: bool) -> list[Lookup]:
    """What a run asks ``journal.lookup()`` for: with ``resume``, every
    stage (with its dependencies, so that a stage is restored only when
    everything upstream is); otherwise the ``cache=True`` stages only. Empty
    without keys (the input could not be fingerprinted)."""
    if not keys:
        return []
    return [
        Lookup(
            stage_id=st.stage_id,
            key=keys[st.stage_id],
            resume=resume,
            cache=st.cache,
            max_age=st.cache_expiration,
            dependencies=st.dependencies,
        )
        for st in stages
        if resume or st.cache
    ]
