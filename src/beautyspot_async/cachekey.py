# Over 500 lines: the canonical encoding and the keyers share private helpers on the hot path.
"""Cache keys: canonical argument encoding, function identity and ``KeyGen``.

A cache key is ``cache_key(identity, version, input_id)`` where

- ``identity`` is :func:`function_identity` (``module.qualname`` or ``name=``),
- ``input_id`` is :meth:`ArgumentKeyer.input_id`: the call's arguments bound
  to the signature with defaults applied, encoded by :func:`canonical_bytes`
  and hashed (or the hash of what a custom ``input_key_fn`` returned).

Everything here is pure, synchronous and free of I/O except the two file
helpers of :class:`KeyGen`, which the pipeline runs in a worker thread
(:attr:`ArgumentKeyer.blocking`).

Hash
    SHA-256 (``hashlib``), truncated to 128 bits and written as 32 lowercase
    hex characters. It is in the standard library, specified forever, the same
    on every machine, and costs well under a microsecond for short inputs.
    With 128 bits the chance that any two of ``n`` distinct keys collide is
    about ``n**2 / 2**129``: for a trillion cached calls, about 1e-15.

Canonical encoding
    Every value is written as a one-byte type tag, an 8-byte big-endian
    payload length and the payload; containers concatenate their children's
    encodings. Nothing goes through ``repr()``, ``str()`` of arbitrary objects
    or ``hash()``, so keys do not depend on ``PYTHONHASHSEED``, the platform
    or the Python version. Rules worth knowing:

    - Types are part of the value: ``True`` != ``1`` != ``1.0``, ``list`` !=
      ``tuple``, ``str`` != ``bytes``, ``set`` != ``frozenset``, a namedtuple
      != a tuple, and a subclass of a builtin (``Counter``, ``defaultdict``, a
      ``str`` subclass) is keyed by its class and its builtin value.
    - ``dict`` and ``set`` order does not matter: entries are sorted by their
      encoded bytes.
    - Floats are keyed by their IEEE-754 bits, so ``-0.0`` and ``0.0`` are
      different keys (they are distinguishable values); every NaN is first
      replaced by one canonical NaN, so ``float("nan")`` always gives the same
      key. The same holds for complex parts and float numpy arrays.
    - A naive ``datetime`` is keyed by its wall-clock fields. An aware one by
      its wall-clock fields and its UTC offset: equal instants in different
      offsets are different keys (they format differently, and a hit must
      return what the miss would have), while the same wall time and offset
      from two tzinfo implementations share a key. ``fold`` is ignored. An
      aware ``time`` whose tzinfo cannot give an offset is not keyable.
    - ``Decimal`` is keyed by sign, digits and exponent, so ``Decimal("1.0")``
      and ``Decimal("1.00")`` differ (different precision, different ``str``).
    - Paths: concrete ``Path`` objects (posix or windows) share the kind
      ``"Path"``; pure paths keep their flavour; the value is ``as_posix()``.
    - Enums: class ``module.qualname`` plus the member's value. Dataclasses:
      class plus the fields that take part in ``==`` (``compare=True``).
      Pydantic models: class plus ``model_dump(mode="python")``.
    - numpy arrays and scalars: dtype (normalised to little-endian), shape and
      the SHA-256 of the C-order bytes; object and string arrays are encoded
      element by element. pandas ``Series``/``DataFrame``/``Index``: dtypes,
      names, index, columns and values. Neither library is imported here: an
      object can only be one of their types if its module is already loaded.
    - An object whose class defines ``__cache_key__(self)`` is keyed by its
      class and the (keyable) value that method returns.
    - Module-level functions, classes and modules are keyed by name; a bound
      method by its function and ``self``; a ``functools.partial`` by its
      function and bound arguments. Lambdas, functions defined inside other
      functions, open files, sockets, locks, generators, coroutines and any
      other object without a value identity raise :class:`ConfigurationError`
      naming the argument and the path inside it (``items[3]``).
    - Classes are named ``module.qualname``. An instance of a class defined
      inside a function is still keyable (by that name and its value), so two
      such classes sharing a qualname, say from one factory, key alike.

Changing any rule here changes stored keys: the tests pin golden values.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import functools
import hashlib
import inspect
import io
import os
import re
import struct
import sys
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any, Final

from .exceptions import ConfigurationError

__all__ = [
    "ArgumentKeyer",
    "KeyGen",
    "KeyPolicy",
    "KeyScope",
    "cache_key",
    "canonical_bytes",
    "function_identity",
]

# --------------------------------------------------------------------------- hashing

_HEX_CHARS: Final = 32  # 128 bits


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_HEX_CHARS]


# --------------------------------------------------------------------------- encoding

_pack_len = struct.Struct(">Q").pack
_pack_double = struct.Struct(">d").pack
_pack_date = struct.Struct(">iBB").pack
_pack_clock = struct.Struct(">BBBI").pack
# The canonical quiet NaN (sign 0, exponent all ones, top mantissa bit set).
_CANON_NAN: Final = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"


def _frame(tag: bytes, payload: bytes) -> bytes:
    return tag + _pack_len(len(payload)) + payload


_NONE: Final = _frame(b"N", b"")
_TRUE: Final = _frame(b"T", b"")
_FALSE: Final = _frame(b"F", b"")
_ELLIPSIS: Final = _frame(b".", b"")


class _Unkeyable(Exception):
    """Internal: a value with no value identity, and where it sits inside the root."""

    def __init__(self, obj: object, reason: str) -> None:
        super().__init__(reason)
        self.obj_type = type(obj)
        self.reason = reason
        self.segments: list[str] = []  # innermost first; filled while unwinding

    def push(self, segment: str) -> None:
        self.segments.append(segment)

    def location(self, root: str) -> str:
        return root + "".join(reversed(self.segments))

    def describe(self, root: str) -> str:
        where = self.location(root)
        return (
            f"cannot derive a cache key from an object of type {_type_label(self.obj_type)}"
            f"{' (at ' + where + ')' if where != root else ''}: {self.reason}"
        )


def _type_label(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _class_id(cls: type) -> bytes:
    return _enc_str(f"{cls.__module__}.{cls.__qualname__}")


def _short_repr(key: object) -> str:
    if type(key) in (str, int, float, bool, bytes, type(None)):
        text = repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"<{_type_label(type(key))}>"


def _enc(value: object) -> bytes:
    encoder = _EXACT.get(type(value))
    if encoder is not None:
        return encoder(value)
    return _enc_other(value)


def _enc_str(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"s" + _pack_len(len(data)) + data


def _enc_int(value: int) -> bytes:
    return _frame(b"i", value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _float_bits(value: float) -> bytes:
    return _CANON_NAN if value != value else _pack_double(value)


def _enc_float(value: float) -> bytes:
    return _frame(b"f", _float_bits(value))


def _enc_complex(value: complex) -> bytes:
    return _frame(b"c", _float_bits(value.real) + _float_bits(value.imag))


def _seq_payload(items: Any) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    try:
        for item in items:
            # Strings dominate real arguments; inlining them halves the cost per element.
            if type(item) is str:
                data = item.encode("utf-8", "surrogatepass")
                append(b"s" + _pack_len(len(data)) + data)
            else:
                append(_enc(item))
    except _Unkeyable as err:
        err.push(f"[{len(parts)}]")
        raise
    return b"".join(parts)


def _dict_payload(mapping: Mapping[Any, Any]) -> bytes:
    entries: list[bytes] = []
    append = entries.append
    for key, item in mapping.items():
        if type(key) is str:
            data = key.encode("utf-8", "surrogatepass")
            encoded_key = b"s" + _pack_len(len(data)) + data
        else:
            try:
                encoded_key = _enc(key)
            except _Unkeyable as err:
                err.push(f"<key {_short_repr(key)}>")
                raise
        if type(item) is str:
            data = item.encode("utf-8", "surrogatepass")
            append(encoded_key + b"s" + _pack_len(len(data)) + data)
            continue
        try:
            append(encoded_key + _enc(item))
        except _Unkeyable as err:
            err.push(f"[{_short_repr(key)}]")
            raise
    entries.sort()
    return b"".join(entries)


def _set_payload(items: Any) -> bytes:
    parts: list[bytes] = []
    for item in items:
        try:
            parts.append(_enc(item))
        except _Unkeyable as err:
            err.push("<set element>")
            raise
    parts.sort()
    return b"".join(parts)


def _offset_us(offset: dt.timedelta) -> bytes:
    return _enc_int((offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds)


def _enc_datetime(value: dt.datetime) -> bytes:
    fields = _pack_date(value.year, value.month, value.day) + _pack_clock(
        value.hour, value.minute, value.second, value.microsecond
    )
    offset = value.utcoffset()
    if offset is None:
        return _frame(b"D", fields)
    return _frame(b"A", fields + _offset_us(offset))


def _enc_date(value: dt.date) -> bytes:
    return _frame(b"a", _pack_date(value.year, value.month, value.day))


def _enc_time(value: dt.time) -> bytes:
    fields = _pack_clock(value.hour, value.minute, value.second, value.microsecond)
    if value.tzinfo is None:
        return _frame(b"h", fields)
    offset = value.utcoffset()
    if offset is None:
        raise _Unkeyable(value, "its tzinfo gives no UTC offset without a date")
    return _frame(b"H", fields + _offset_us(offset))


def _enc_timedelta(value: dt.timedelta) -> bytes:
    return _frame(b"e", _offset_us(value))


def _enc_decimal(value: decimal.Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    return _frame(b"M", _enc_int(sign) + _enc(exponent) + _frame(b"b", bytes(digits)))


_PATH_KINDS: Final[dict[type, str]] = {
    PosixPath: "Path",
    WindowsPath: "Path",
    PurePosixPath: "PurePosixPath",
    PureWindowsPath: "PureWindowsPath",
}


def _enc_path(value: PurePath) -> bytes:
    kind = _PATH_KINDS.get(type(value))
    if kind is None:
        cls = type(value)
        kind = f"{cls.__module__}.{cls.__qualname__}"
    return _frame(b"p", _enc_str(kind) + _enc_str(value.as_posix()))


def _enc_memoryview(value: memoryview) -> bytes:
    return _frame(b"m", _enc_str(value.format) + _enc(value.shape) + _frame(b"b", value.tobytes()))


def _enc_pattern(value: re.Pattern[Any]) -> bytes:
    return _frame(b"G", _enc(value.pattern) + _enc_int(value.flags))


_EXACT: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: _NONE,
    bool: lambda v: _TRUE if v else _FALSE,
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: lambda v: _frame(b"b", v),
    bytearray: lambda v: _frame(b"y", bytes(v)),
    memoryview: _enc_memoryview,
    list: lambda v: _frame(b"l", _seq_payload(v)),
    tuple: lambda v: _frame(b"t", _seq_payload(v)),
    dict: lambda v: _frame(b"d", _dict_payload(v)),
    set: lambda v: _frame(b"S", _set_payload(v)),
    frozenset: lambda v: _frame(b"Z", _set_payload(v)),
    range: lambda v: _frame(b"r", _enc_int(v.start) + _enc_int(v.stop) + _enc_int(v.step)),
    slice: lambda v: _frame(b"L", _seq_payload((v.start, v.stop, v.step))),
    type(Ellipsis): lambda v: _ELLIPSIS,
    dt.datetime: _enc_datetime,
    dt.date: _enc_date,
    dt.time: _enc_time,
    dt.timedelta: _enc_timedelta,
    decimal.Decimal: _enc_decimal,
    fractions.Fraction: lambda v: _frame(b"Q", _enc_int(v.numerator) + _enc_int(v.denominator)),
    uuid.UUID: lambda v: _frame(b"U", v.bytes),
    re.Pattern: _enc_pattern,
    **dict.fromkeys(_PATH_KINDS, _enc_path),
}

# Subclasses of these are keyed as (class, value of the base).
_BUILTIN_BASES: Final = (
    int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset,
    dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal, fractions.Fraction, uuid.UUID,
)  # fmt: skip


def _enc_other(value: object) -> bytes:
    """Encode anything that is not an exact builtin type (the slower path)."""
    cls = type(value)
    custom = getattr(cls, "__cache_key__", None)
    if custom is not None and not isinstance(value, type):
        key = custom(value)
        if key is value:
            raise _Unkeyable(value, "__cache_key__ returned the object itself")
        try:
            return _frame(b"K", _class_id(cls) + _enc(key))
        except _Unkeyable as err:
            err.push(".__cache_key__()")
            raise
    if isinstance(value, enum.Enum):
        try:
            return _frame(b"E", _class_id(cls) + _enc(value.value))
        except _Unkeyable as err:
            err.push(".value")
            raise
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        return _enc_numpy(value, numpy)
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        encoded = _enc_pandas(value, pandas)
        if encoded is not None:
            return encoded
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        try:
            return _frame(b"P", _class_id(cls) + _enc(value.model_dump(mode="python")))
        except _Unkeyable as err:
            err.push(".model_dump()")
            raise
    if dataclasses.is_dataclass(cls) and not isinstance(value, type):
        parts = [_class_id(cls)]
        for field in dataclasses.fields(cls):
            if field.compare:
                try:
                    parts.append(_enc_str(field.name) + _enc(getattr(value, field.name)))
                except _Unkeyable as err:
                    err.push(f".{field.name}")
                    raise
        return _frame(b"C", b"".join(parts))
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return _frame(b"q", _class_id(cls) + _seq_payload(value))
    if isinstance(value, PurePath):
        return _enc_path(value)
    for base in _BUILTIN_BASES:
        if isinstance(value, base):
            return _frame(b"u", _class_id(cls) + _EXACT[base](value))
    return _enc_reference(value)


def _enc_reference(value: object) -> bytes:
    """Functions, classes, modules, bound methods and partials, keyed by name."""
    if isinstance(value, types.ModuleType):
        return _frame(b"R", _enc_str("module") + _enc_str(value.__name__))
    if isinstance(value, types.MethodType):
        try:
            return _frame(b"W", _enc_str(_ref_name(value.__func__)) + _enc(value.__self__))
        except _Unkeyable as err:
            err.push(".__self__")
            raise
    if isinstance(value, types.BuiltinMethodType):
        owner = value.__self__
        if owner is not None and not isinstance(owner, types.ModuleType):
            name = f"{_type_label(type(owner))}.{value.__name__}"
            try:
                return _frame(b"W", _enc_str(name) + _enc(owner))
            except _Unkeyable as err:
                err.push(".__self__")
                raise
        return _frame(b"R", _enc_str("function") + _enc_str(_ref_name(value)))
    if isinstance(value, functools.partial):
        func = _ref_name(value.func)
        try:
            args = _enc(value.args)
        except _Unkeyable as err:
            err.push(".args")
            raise
        try:
            keywords = _enc(value.keywords)
        except _Unkeyable as err:
            err.push(".keywords")
            raise
        return _frame(b"w", _enc_str(func) + args + keywords)
    if isinstance(value, types.FunctionType):
        return _frame(b"R", _enc_str("function") + _enc_str(_ref_name(value)))
    if isinstance(value, type):
        return _frame(b"R", _enc_str("class") + _enc_str(_ref_name(value)))
    raise _Unkeyable(value, _unkeyable_reason(value))


def _ref_name(obj: Any) -> str:
    """``module.qualname`` of an object reachable under that name, else unkeyable."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise _Unkeyable(obj, "it has no module-level name")
    if "<lambda>" in qualname:
        raise _Unkeyable(obj, "a lambda has no stable identity; use a module-level function")
    if "<locals>" in qualname:
        raise _Unkeyable(obj, "it is defined inside a function, so its name does not identify it")
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not (
        target is obj
        or getattr(target, "__func__", None) is obj
        or (callable(target) and inspect.unwrap(target) is obj)
    ):
        raise _Unkeyable(obj, f"{module}.{qualname} does not name this object")
    return f"{module}.{qualname}"


def _unkeyable_reason(value: object) -> str:
    if isinstance(value, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        return "a generator or coroutine is consumed by use; pass the values it produces"
    if isinstance(value, io.IOBase):
        return "an open file or stream has no value; pass its path and use KeyGen.from_path_stat"
    return "its type defines no value identity"


# ---------------------------------------------------------------- numpy and pandas


def _enc_numpy(value: Any, np: Any) -> bytes:
    if isinstance(value, np.generic):
        return _frame(b"g", _array_payload(np.asarray(value), np))
    if type(value) is np.ndarray:
        return _frame(b"n", _array_payload(value, np))
    # Subclasses (masked arrays, matrices) keep their class; masks are part of the value.
    extra = b""
    masked = getattr(np, "ma", None)
    if masked is not None and isinstance(value, masked.MaskedArray):
        extra = _array_payload(masked.getmaskarray(value), np)
        value = value.data
    return _frame(b"n", _class_id(type(value)) + _array_payload(np.asarray(value), np) + extra)


def _array_payload(array: Any, np: Any) -> bytes:
    dtype = array.dtype
    shape = _enc(tuple(int(n) for n in array.shape))
    if dtype.hasobject or dtype.kind == "T":
        if dtype.fields is not None:
            raise _Unkeyable(array, "a structured array with object fields")
        return _enc_str(dtype.kind) + shape + _frame(b"l", _seq_payload(array.ravel(order="C")))
    if dtype.fields is not None:
        dtype_id = _enc(dtype.descr)
    else:
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
            array = array.astype(dtype.newbyteorder("<"))
            dtype = array.dtype
        dtype_id = _enc_str(dtype.str)
    flat = np.ascontiguousarray(array).reshape(-1)
    if dtype.kind in "fc" and flat.size:
        parts = flat.view(flat.real.dtype) if dtype.kind == "c" else flat
        nans = np.isnan(parts)
        if nans.any():
            parts = parts.copy()
            parts[nans] = np.nan
            flat = parts
    digest = hashlib.sha256(flat.view(np.uint8)).digest()
    return dtype_id + shape + _frame(b"b", digest)


def _enc_pandas(value: Any, pd: Any) -> bytes | None:
    if isinstance(value, pd.DataFrame):
        parts = [_index_payload(value.columns), _index_payload(value.index)]
        for i in range(value.shape[1]):
            try:
                parts.append(_values_payload(value.iloc[:, i]))
            except _Unkeyable as err:
                err.push(f".iloc[:, {i}]")
                raise
        return _frame(b"X", b"F" + b"".join(parts))
    if isinstance(value, pd.Series):
        try:
            name = _enc(value.name)
        except _Unkeyable as err:
            err.push(".name")
            raise
        return _frame(b"X", b"S" + name + _index_payload(value.index) + _values_payload(value))
    if isinstance(value, pd.Index):
        return _frame(b"X", b"I" + _index_payload(value))
    if value is pd.NaT:
        return _frame(b"x", b"T")
    if value is pd.NA:
        return _frame(b"x", b"A")
    if isinstance(value, pd.Timestamp):
        plain = value.to_pydatetime(warn=False)
        return _frame(b"x", b"t" + _enc_datetime(plain) + _enc_int(value.nanosecond))
    if isinstance(value, pd.Timedelta):
        plain_delta = value.to_pytimedelta()
        return _frame(b"x", b"d" + _enc_timedelta(plain_delta) + _enc_int(value.nanoseconds))
    if isinstance(value, pd.Period):
        return _frame(b"x", b"p" + _enc_str(value.freqstr) + _enc_int(value.ordinal))
    if isinstance(value, pd.Interval):
        return _frame(b"x", b"i" + _seq_payload((value.left, value.right, value.closed)))
    return None


def _index_payload(index: Any) -> bytes:
    try:
        names = _enc(list(index.names))
    except _Unkeyable as err:
        err.push(".names")
        raise
    return names + _values_payload(index)


def _values_payload(obj: Any) -> bytes:
    """dtype and values of a Series or Index (not its name or index)."""
    np = sys.modules["numpy"]
    pd = sys.modules["pandas"]
    dtype = obj.dtype
    if isinstance(dtype, np.dtype):
        return _array_payload(obj.to_numpy(), np)
    # Extension dtypes: the dtype's name, categories if any, values as Python objects.
    extra = b""
    if isinstance(dtype, pd.CategoricalDtype):
        extra = _index_payload(dtype.categories) + (_TRUE if dtype.ordered else _FALSE)
    values = obj.to_numpy(dtype=object)
    return _enc_str(str(dtype)) + extra + _array_payload(values, np)


def canonical_bytes(value: object) -> bytes:
    """Return the canonical, stable encoding of ``value`` (see the module docstring).

    Equal values of the same types always give equal bytes, in any process,
    on any machine. Raises :class:`ConfigurationError` for a value (or a part
    of it) that has no value identity; the message names the path to it.
    """
    try:
        return _enc(value)
    except _Unkeyable as err:
        raise ConfigurationError(
            err.describe("value") + ". Give the type a __cache_key__ method, or leave it out."
        ) from None
    except RecursionError:
        raise ConfigurationError(
            "cannot derive a cache key: the value is nested too deeply or contains itself"
        ) from None


# --------------------------------------------------------------------------- identity


def _unwrap(fn: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The underlying function plus the arguments bound in front of a call's."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    while True:
        if isinstance(fn, functools.partial):
            args = fn.args + args
            kwargs = {**fn.keywords, **kwargs}
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            args = (fn.__self__, *args)
            fn = fn.__func__
        elif isinstance(fn, staticmethod | classmethod):
            fn = fn.__func__
        else:
            return fn, args, kwargs


def underlying_function(fn: Any) -> Any:
    """The function behind ``fn``'s partials, bound methods and static/class methods."""
    return _unwrap(fn)[0]


def function_identity(fn: Callable[..., Any], name: str | None = None) -> str:
    """Return the identity a function's cache keys are scoped by.

    ``name`` when given; otherwise ``module.qualname`` of the function. A
    ``functools.partial`` or bound method has the identity of its underlying
    function (its bound arguments belong to the input id); a callable object
    has that of ``type(obj).__call__``. A lambda has no stable identity and
    raises :class:`ConfigurationError` asking for ``name=``.
    """
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name= must be a non-empty str, got {name!r}")
        return name
    target, _, _ = _unwrap(fn)
    if not isinstance(getattr(target, "__qualname__", None), str) and callable(target):
        # An instance with __call__: instances have no __qualname__ of their own.
        target = type(target).__call__
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        raise ConfigurationError(f"cannot name {fn!r}: it has no __qualname__; pass name=")
    if not isinstance(module, str):
        owner = getattr(target, "__self__", None)
        module = type(owner).__module__ if owner is not None else "builtins"
    if "<lambda>" in qualname:
        raise ConfigurationError(
            f"cannot derive a stable identity for the lambda {module}.{qualname}: "
            "every lambda has the same name; pass name= or use a def"
        )
    return f"{module}.{qualname}"


def _describe(fn: Any) -> str:
    try:
        return function_identity(fn)
    except ConfigurationError:
        target, _, _ = _unwrap(fn)
        module = getattr(target, "__module__", "?")
        return f"{module}.{getattr(target, '__qualname__', type(target).__qualname__)}"


def cache_key(identity: str, version: str | None, input_id: str) -> str:
    """Return the cache key (32 lowercase hex chars) of one call.

    Each part is length-framed, so ``("a", "bc")`` and ``("ab", "c")`` differ,
    and ``version=None`` differs from ``version=""``.
    """
    if not isinstance(identity, str) or not isinstance(input_id, str):
        raise ConfigurationError("cache_key() takes an identity and input_id of type str")
    if version is not None and not isinstance(version, str):
        raise ConfigurationError(f"version must be a str or None, got {type(version).__name__}")
    return KeyScope(identity, version)(input_id)


class KeyScope:
    """:func:`cache_key` for one ``(identity, version)``, framed once.

    The pipeline derives a key on every call; framing the constant part once
    per marked function halves the cost. ``KeyScope(i, v)(x) == cache_key(i, v, x)``.
    """

    __slots__ = ("_prefix",)

    def __init__(self, identity: str, version: str | None) -> None:
        if not isinstance(identity, str):
            raise ConfigurationError("a key scope takes an identity of type str")
        if version is not None and not isinstance(version, str):
            raise ConfigurationError(f"version must be a str or None, got {type(version).__name__}")
        framed_version = _NONE if version is None else _enc_str(version)
        self._prefix = b"k" + _enc_str(identity) + framed_version

    def __call__(self, input_id: str) -> str:
        data = input_id.encode()
        return _digest(self._prefix + b"s" + _pack_len(len(data)) + data)


# --------------------------------------------------------------------------- keyers

_MISSING: Final[Any] = object()
_P = inspect.Parameter
_BLOCKING_ATTR: Final = "__beautyspot_blocking__"
_BIND_ATTR: Final = "__beautyspot_bound_call__"


class KeyPolicy:
    """A key function over named arguments: ignore some, transform others.

    Built by :meth:`KeyGen.ignore` and :meth:`KeyGen.map` and chained
    (``KeyGen.ignore("client").map(prompt=str.strip)``). A policy needs the
    function's signature: :class:`ArgumentKeyer` binds it when the function is
    decorated, and a name the function does not have (and cannot receive
    through ``**kwargs``) is a :class:`ConfigurationError` then. Policies are
    immutable; each method returns a new one.
    """

    __slots__ = ("_ignored", "_transforms")

    def __init__(
        self,
        ignored: frozenset[str] = frozenset(),
        transforms: Mapping[str, Callable[[Any], object]] | None = None,
    ) -> None:
        self._ignored = ignored
        self._transforms: dict[str, Callable[[Any], object]] = dict(transforms or {})
        both = self._ignored & self._transforms.keys()
        if both:
            raise ConfigurationError(f"arguments both ignored and mapped: {sorted(both)}")

    @property
    def ignored(self) -> frozenset[str]:
        """Names of the arguments left out of the key."""
        return self._ignored

    @property
    def transforms(self) -> Mapping[str, Callable[[Any], object]]:
        """Per-argument functions applied to the value before it is encoded."""
        return types.MappingProxyType(self._transforms)

    def ignore(self, *names: str) -> KeyPolicy:
        """Return a policy that also leaves ``names`` out of the key."""
        for name in names:
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigurationError(f"KeyGen.ignore() takes argument names, got {name!r}")
        return KeyPolicy(self._ignored | frozenset(names), self._transforms)

    def map(self, **transforms: Callable[[Any], object]) -> KeyPolicy:
        """Return a policy that also keys each named argument by ``transform(value)``."""
        for name, transform in transforms.items():
            if not callable(transform):
                raise ConfigurationError(f"KeyGen.map({name}=...) needs a callable")
            if name in self._transforms:
                raise ConfigurationError(f"argument {name!r} is mapped twice")
        return KeyPolicy(self._ignored, {**self._transforms, **transforms})

    def bind_to(self, fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], str]:
        """Validate the names against ``fn`` and return its ``input_id(args, kwargs)``."""
        return ArgumentKeyer(fn, input_key_fn=self).input_id

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        raise ConfigurationError(
            "a KeyPolicy needs the function's signature: pass it as input_key_fn= "
            "to spot.mark, or call policy.bind_to(fn)"
        )

    def __repr__(self) -> str:
        parts = []
        if self._ignored:
            parts.append(f"ignore({', '.join(repr(n) for n in sorted(self._ignored))})")
        if self._transforms:
            parts.append(f"map({', '.join(sorted(self._transforms))})")
        return "KeyGen." + (".".join(parts) or "ignore()")


class ArgumentKeyer:
    """Derives the input id of calls to one function; built once, at decoration.

    ``fn`` is a function, coroutine function, callable object, bound method or
    ``functools.partial`` (whose bound arguments are merged in front of each
    call's). For a method marked on its class, pass the plain function: the
    caller passes ``self`` positionally and it is part of the key unless a
    policy ignores it.

    ``input_key_fn`` is ``None`` (key on all arguments), a :class:`KeyPolicy`,
    or a function receiving the call's ``*args, **kwargs`` as written and
    returning ``str`` or ``bytes``. A function carrying the attribute
    ``__beautyspot_blocking__ = True`` (as the :class:`KeyGen` file helpers do)
    makes :attr:`blocking` true.
    """

    __slots__ = (
        "_defaults", "_extra_ignored", "_extra_transforms", "_fast", "_key_fn", "_kw_index",
        "_min_positional", "_mode", "_n_positional", "_name", "_names", "_plan",
        "_pre_args", "_pre_bytes", "_pre_kwargs", "_required", "_signature",
    )  # fmt: skip

    def __init__(self, fn: Callable[..., Any], *, input_key_fn: Callable[..., Any] | None = None):
        target, self._pre_args, self._pre_kwargs = _unwrap(fn)
        self._name = _describe(fn)
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the signature of {self._name}") from exc
        self._signature = signature
        params = tuple(signature.parameters.values())
        self._names = tuple(p.name for p in params)
        self._key_fn = input_key_fn
        self._pre_bytes = b""
        policy = input_key_fn if isinstance(input_key_fn, KeyPolicy) else KeyPolicy()
        if input_key_fn is None or isinstance(input_key_fn, KeyPolicy):
            self._mode = "canonical"
        elif not callable(input_key_fn):
            raise ConfigurationError(f"input_key_fn of {self._name} must be callable")
        elif inspect.iscoroutinefunction(input_key_fn):
            raise ConfigurationError(
                f"input_key_fn of {self._name} must be a plain function returning str or bytes, "
                "not a coroutine function"
            )
        elif getattr(input_key_fn, _BIND_ATTR, False):
            self._mode = "bound"
        else:
            self._mode = "custom"
            if self._pre_args or self._pre_kwargs:
                try:
                    self._pre_bytes = _enc(self._pre_args) + _enc(self._pre_kwargs)
                except _Unkeyable as err:
                    raise ConfigurationError(
                        f"the arguments bound to {self._name}: " + err.describe("bound arguments")
                    ) from None

        has_var_kw = any(p.kind is _P.VAR_KEYWORD for p in params)
        unknown = (policy.ignored | policy.transforms.keys()) - set(self._names)
        if unknown and not has_var_kw:
            raise ConfigurationError(
                f"{policy!r} names {sorted(unknown)}, which {self._name} does not take "
                f"(its parameters: {', '.join(self._names) or 'none'})"
            )
        self._extra_ignored = policy.ignored & unknown
        self._extra_transforms = {n: policy.transforms[n] for n in unknown - policy.ignored}
        self._plan: tuple[tuple[bytes, Callable[[Any], object] | None, bool] | None, ...] = tuple(
            None
            if p.name in policy.ignored
            else (_enc_str(p.name), policy.transforms.get(p.name), p.kind is _P.VAR_KEYWORD)
            for p in params
        )

        # Fast binding for signatures without *args/**kwargs.
        self._fast = not any(p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD) for p in params)
        positional = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
        self._n_positional = len(positional)
        self._kw_index = {
            p.name: i for i, p in enumerate(params) if p.kind is not _P.POSITIONAL_ONLY
        }
        self._defaults = tuple(_MISSING if p.default is _P.empty else p.default for p in params)
        required = [i for i, p in enumerate(params) if p.default is _P.empty]
        self._required = tuple(required)
        self._min_positional = required[-1] + 1 if required else 0

    @property
    def blocking(self) -> bool:
        """True when the key function does I/O and must run off the event loop."""
        return bool(getattr(self._key_fn, _BLOCKING_ATTR, False))

    @property
    def by_value_only(self) -> bool:
        """True when ids depend on nothing but the argument values (no key function or policy)."""
        return self._key_fn is None

    @property
    def signature(self) -> inspect.Signature:
        """The signature calls are bound to (of the unwrapped function)."""
        return self._signature

    def __repr__(self) -> str:
        return f"<ArgumentKeyer {self._name} {self._mode}>"

    def input_id(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the input id (32 lowercase hex chars) of one call.

        Raises ``TypeError`` when the arguments do not bind to the signature
        and :class:`ConfigurationError` when an argument has no value identity
        or a custom key function returns something other than str or bytes.
        """
        if self._mode == "custom":
            assert self._key_fn is not None
            return self._custom_id(self._key_fn(*args, **kwargs), self._pre_bytes)
        if self._pre_args:
            args = self._pre_args + args
        if self._pre_kwargs:
            kwargs = {**self._pre_kwargs, **kwargs}
        if self._mode == "bound":
            assert self._key_fn is not None
            bound = self._bind_slow(args, kwargs)
            if not bound.args:
                raise ConfigurationError(
                    f"{_describe(self._key_fn)} keys on the first argument of {self._name}, "
                    "which this call did not pass positionally"
                )
            return self._custom_id(self._key_fn(*bound.args, **bound.kwargs), b"")
        return self._encode(self._bind(args, kwargs))

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Sequence[Any]:
        n = len(args)
        if self._fast and n <= self._n_positional:
            if not kwargs:
                if n >= self._min_positional:
                    return args + self._defaults[n:]
            else:
                values = list(args)
                values.extend(self._defaults[n:])
                index = self._kw_index
                for name, value in kwargs.items():
                    i = index.get(name)
                    if i is None or i < n:
                        break
                    values[i] = value
                else:
                    for i in self._required:
                        if values[i] is _MISSING:
                            break
                    else:
                        return values
        bound = self._bind_slow(args, kwargs)
        return [bound.arguments[name] for name in self._names]

    def _bind_slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._name}(): {exc}") from None
        bound.apply_defaults()
        return bound

    def _encode(self, values: Sequence[Any]) -> str:
        parts = [b"V"]
        append = parts.append
        for entry, value in zip(self._plan, values, strict=True):
            if entry is None:
                continue
            prefix, transform, var_keyword = entry
            append(prefix)
            if var_keyword:
                append(self._encode_extra_kwargs(value))
                continue
            if transform is not None:
                value = transform(value)
            if type(value) is str:
                data = value.encode("utf-8", "surrogatepass")
                append(b"s" + _pack_len(len(data)) + data)
                continue
            try:
                append(_enc(value))
            except _Unkeyable as err:
                raise self._argument_error(prefix, err) from None
            except RecursionError:
                raise self._argument_error(prefix, None) from None
        return hashlib.sha256(b"".join(parts)).hexdigest()[:_HEX_CHARS]

    def _encode_extra_kwargs(self, extra: dict[str, Any]) -> bytes:
        entries = []
        for name, value in extra.items():
            if name in self._extra_ignored:
                continue
            transform = self._extra_transforms.get(name)
            if transform is not None:
                value = transform(value)
            try:
                entries.append(_enc_str(name) + _enc(value))
            except _Unkeyable as err:
                raise self._argument_error(_enc_str(name), err) from None
            except RecursionError:
                raise self._argument_error(_enc_str(name), None) from None
        entries.sort()
        return _frame(b"d", b"".join(entries))

    def _argument_error(self, prefix: bytes, err: _Unkeyable | None) -> ConfigurationError:
        arg = prefix[9:].decode("utf-8", "surrogatepass")
        problem = (
            "the value is nested too deeply or contains itself"
            if err is None
            else err.describe(arg)
        )
        return ConfigurationError(
            f"argument {arg!r} of {self._name}: {problem}. Exclude it with "
            f"input_key_fn=KeyGen.ignore({arg!r}), or give the type a __cache_key__ method."
        )

    def _custom_id(self, result: object, extra: bytes) -> str:
        if isinstance(result, str):
            encoded = _enc_str(result)
        elif isinstance(result, bytes):
            encoded = _frame(b"b", bytes(result))
        else:
            raise ConfigurationError(
                f"input_key_fn {_describe(self._key_fn)} of {self._name} returned "
                f"{_type_label(type(result))}; it must return str or bytes"
            )
        return _digest(b"Y" + encoded + extra)


# --------------------------------------------------------------------------- KeyGen


def _rest_of_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return _enc(args) + _enc(kwargs)
    except _Unkeyable as err:
        raise ConfigurationError(err.describe("arguments after the path")) from None


class KeyGen:
    """Ready-made ``input_key_fn`` values.

    ``from_path_stat`` and ``from_file_content`` are for functions whose
    first argument is a file path; they read the file system, so the pipeline
    runs them in a worker thread. ``ignore`` and ``map`` build a
    :class:`KeyPolicy` over named arguments.
    """

    @staticmethod
    def from_path_stat(path: str | os.PathLike[str], /, *args: Any, **kwargs: Any) -> str:
        """Key on the file's resolved absolute path, size and ``mtime_ns``, plus the other args.

        Cheap (one ``stat``), and it changes when the file is rewritten or
        touched. The remaining arguments are keyed canonically, so
        ``f(p, mode="a")`` and ``f(p, mode="b")`` differ. A missing file raises
        ``FileNotFoundError``. Under ``spot.mark`` the call is first bound to
        the function's signature, so positional and keyword spellings agree.
        """
        resolved = os.path.realpath(os.fspath(path))
        stat = os.stat(resolved)
        return _digest(
            b"ps"
            + _enc(resolved)
            + _enc_int(stat.st_size)
            + _enc_int(stat.st_mtime_ns)
            + _rest_of_call(args, kwargs)
        )

    @staticmethod
    def from_file_content(path: str | os.PathLike[str], /, *args: Any, **kwargs: Any) -> str:
        """Key on the SHA-256 of the file's content (streamed), plus the other args.

        Survives ``touch``, copies and moves: the path itself is not part of
        the key. Reads the whole file on every call. A missing file raises
        ``FileNotFoundError``.
        """
        with open(path, "rb") as file:
            content = hashlib.file_digest(file, "sha256").digest()
        return _digest(b"pc" + _frame(b"b", content) + _rest_of_call(args, kwargs))

    @staticmethod
    def ignore(*names: str) -> KeyPolicy:
        """A policy that leaves the named arguments out of the key (``"self"`` works)."""
        return KeyPolicy().ignore(*names)

    @staticmethod
    def map(**transforms: Callable[[Any], object]) -> KeyPolicy:
        """A policy that keys each named argument by ``transform(value)``."""
        return KeyPolicy().map(**transforms)


for _helper in (KeyGen.from_path_stat, KeyGen.from_file_content):
    setattr(_helper, _BLOCKING_ATTR, True)
    setattr(_helper, _BIND_ATTR, True)
del _helper
