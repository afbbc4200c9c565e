# Over 500 lines: one recursive encoder whose tags are stored in keys; read its cases together.
"""The canonical tagged encoding of values, and the hash that keys are made of.

Every stored key depends on these bytes, so a change to any rule here
changes stored keys; the tests pin golden values.

Pure and synchronous. :func:`canonical_bytes` writes every value as a one-byte
type tag, an 8-byte big-endian payload length and the payload; the rules a
user can rely on are listed in :mod:`beautyspot_async.cachekey`. The key
builders (``_keygen``) frame their own parts with the helpers exported here.
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
import re
import struct
import sys
import types
import uuid
from collections.abc import Callable, Mapping
from pathlib import PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any, Final

from .exceptions import ConfigurationError

__all__ = [
    "NONE",
    "Unkeyable",
    "canonical_bytes",
    "encode",
    "encode_int",
    "encode_str",
    "frame",
    "hexdigest",
    "pack_len",
    "type_label",
]

# --------------------------------------------------------------------------- hashing

_HEX_CHARS: Final = 32  # 128 bits


def hexdigest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_HEX_CHARS]


# --------------------------------------------------------------------------- encoding

pack_len = struct.Struct(">Q").pack
_pack_double = struct.Struct(">d").pack
_pack_date = struct.Struct(">iBB").pack
_pack_clock = struct.Struct(">BBBI").pack
# The canonical quiet NaN (sign 0, exponent all ones, top mantissa bit set).
_CANON_NAN: Final = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"


def frame(tag: bytes, payload: bytes) -> bytes:
    return tag + pack_len(len(payload)) + payload


NONE: Final = frame(b"N", b"")
_TRUE: Final = frame(b"T", b"")
_FALSE: Final = frame(b"F", b"")
_ELLIPSIS: Final = frame(b".", b"")


class Unkeyable(Exception):
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
            f"cannot derive a cache key from an object of type {type_label(self.obj_type)}"
            f"{' (at ' + where + ')' if where != root else ''}: {self.reason}"
        )


def type_label(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _class_id(cls: type) -> bytes:
    return encode_str(f"{cls.__module__}.{cls.__qualname__}")


def _short_repr(key: object) -> str:
    if type(key) in (str, int, float, bool, bytes, type(None)):
        text = repr(key)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"<{type_label(type(key))}>"


def encode(value: object) -> bytes:
    encoder = _EXACT.get(type(value))
    if encoder is not None:
        return encoder(value)
    return _enc_other(value)


def encode_str(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"s" + pack_len(len(data)) + data


def encode_int(value: int) -> bytes:
    return frame(b"i", value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _float_bits(value: float) -> bytes:
    return _CANON_NAN if value != value else _pack_double(value)


def _enc_float(value: float) -> bytes:
    return frame(b"f", _float_bits(value))


def _enc_complex(value: complex) -> bytes:
    return frame(b"c", _float_bits(value.real) + _float_bits(value.imag))


def _seq_payload(items: Any) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    try:
        for item in items:
            # Strings dominate real arguments; inlining them halves the cost per element.
            if type(item) is str:
                data = item.encode("utf-8", "surrogatepass")
                append(b"s" + pack_len(len(data)) + data)
            else:
                append(encode(item))
    except Unkeyable as err:
        err.push(f"[{len(parts)}]")
        raise
    return b"".join(parts)


def _dict_payload(mapping: Mapping[Any, Any]) -> bytes:
    entries: list[bytes] = []
    append = entries.append
    for key, item in mapping.items():
        if type(key) is str:
            data = key.encode("utf-8", "surrogatepass")
            encoded_key = b"s" + pack_len(len(data)) + data
        else:
            try:
                encoded_key = encode(key)
            except Unkeyable as err:
                err.push(f"<key {_short_repr(key)}>")
                raise
        if type(item) is str:
            data = item.encode("utf-8", "surrogatepass")
            append(encoded_key + b"s" + pack_len(len(data)) + data)
            continue
        try:
            append(encoded_key + encode(item))
        except Unkeyable as err:
            err.push(f"[{_short_repr(key)}]")
            raise
    entries.sort()
    return b"".join(entries)


def _set_payload(items: Any) -> bytes:
    parts: list[bytes] = []
    for item in items:
        try:
            parts.append(encode(item))
        except Unkeyable as err:
            err.push("<set element>")
            raise
    parts.sort()
    return b"".join(parts)


def _offset_us(offset: dt.timedelta) -> bytes:
    return encode_int((offset.days * 86_400 + offset.seconds) * 1_000_000 + offset.microseconds)


def _enc_datetime(value: dt.datetime) -> bytes:
    fields = _pack_date(value.year, value.month, value.day) + _pack_clock(
        value.hour, value.minute, value.second, value.microsecond
    )
    offset = value.utcoffset()
    if offset is None:
        return frame(b"D", fields)
    return frame(b"A", fields + _offset_us(offset))


def _enc_date(value: dt.date) -> bytes:
    return frame(b"a", _pack_date(value.year, value.month, value.day))


def _enc_time(value: dt.time) -> bytes:
    fields = _pack_clock(value.hour, value.minute, value.second, value.microsecond)
    if value.tzinfo is None:
        return frame(b"h", fields)
    offset = value.utcoffset()
    if offset is None:
        raise Unkeyable(value, "its tzinfo gives no UTC offset without a date")
    return frame(b"H", fields + _offset_us(offset))


def _enc_timedelta(value: dt.timedelta) -> bytes:
    return frame(b"e", _offset_us(value))


def _enc_decimal(value: decimal.Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    return frame(b"M", encode_int(sign) + encode(exponent) + frame(b"b", bytes(digits)))


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
    return frame(b"p", encode_str(kind) + encode_str(value.as_posix()))


def _enc_memoryview(value: memoryview) -> bytes:
    return frame(
        b"m", encode_str(value.format) + encode(value.shape) + frame(b"b", value.tobytes())
    )


def _enc_pattern(value: re.Pattern[Any]) -> bytes:
    return frame(b"G", encode(value.pattern) + encode_int(value.flags))


_EXACT: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: NONE,
    bool: lambda v: _TRUE if v else _FALSE,
    int: encode_int,
    float: _enc_float,
    complex: _enc_complex,
    str: encode_str,
    bytes: lambda v: frame(b"b", v),
    bytearray: lambda v: frame(b"y", bytes(v)),
    memoryview: _enc_memoryview,
    list: lambda v: frame(b"l", _seq_payload(v)),
    tuple: lambda v: frame(b"t", _seq_payload(v)),
    dict: lambda v: frame(b"d", _dict_payload(v)),
    set: lambda v: frame(b"S", _set_payload(v)),
    frozenset: lambda v: frame(b"Z", _set_payload(v)),
    range: lambda v: frame(b"r", encode_int(v.start) + encode_int(v.stop) + encode_int(v.step)),
    slice: lambda v: frame(b"L", _seq_payload((v.start, v.stop, v.step))),
    type(Ellipsis): lambda v: _ELLIPSIS,
    dt.datetime: _enc_datetime,
    dt.date: _enc_date,
    dt.time: _enc_time,
    dt.timedelta: _enc_timedelta,
    decimal.Decimal: _enc_decimal,
    fractions.Fraction: lambda v: frame(b"Q", encode_int(v.numerator) + encode_int(v.denominator)),
    uuid.UUID: lambda v: frame(b"U", v.bytes),
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
            raise Unkeyable(value, "__cache_key__ returned the object itself")
        try:
            return frame(b"K", _class_id(cls) + encode(key))
        except Unkeyable as err:
            err.push(".__cache_key__()")
            raise
    if isinstance(value, enum.Enum):
        try:
            return frame(b"E", _class_id(cls) + encode(value.value))
        except Unkeyable as err:
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
            return frame(b"P", _class_id(cls) + encode(value.model_dump(mode="python")))
        except Unkeyable as err:
            err.push(".model_dump()")
            raise
    if dataclasses.is_dataclass(cls) and not isinstance(value, type):
        parts = [_class_id(cls)]
        for field in dataclasses.fields(cls):
            if field.compare:
                try:
                    parts.append(encode_str(field.name) + encode(getattr(value, field.name)))
                except Unkeyable as err:
                    err.push(f".{field.name}")
                    raise
        return frame(b"C", b"".join(parts))
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return frame(b"q", _class_id(cls) + _seq_payload(value))
    if isinstance(value, PurePath):
        return _enc_path(value)
    for base in _BUILTIN_BASES:
        if isinstance(value, base):
            return frame(b"u", _class_id(cls) + _EXACT[base](value))
    return _enc_reference(value)


def _enc_reference(value: object) -> bytes:
    """Functions, classes, modules, bound methods and partials, keyed by name."""
    if isinstance(value, types.ModuleType):
        return frame(b"R", encode_str("module") + encode_str(value.__name__))
    if isinstance(value, types.MethodType):
        try:
            return frame(b"W", encode_str(_ref_name(value.__func__)) + encode(value.__self__))
        except Unkeyable as err:
            err.push(".__self__")
            raise
    if isinstance(value, types.BuiltinMethodType):
        owner = value.__self__
        if owner is not None and not isinstance(owner, types.ModuleType):
            name = f"{type_label(type(owner))}.{value.__name__}"
            try:
                return frame(b"W", encode_str(name) + encode(owner))
            except Unkeyable as err:
                err.push(".__self__")
                raise
        return frame(b"R", encode_str("function") + encode_str(_ref_name(value)))
    if isinstance(value, functools.partial):
        func = _ref_name(value.func)
        try:
            args = encode(value.args)
        except Unkeyable as err:
            err.push(".args")
            raise
        try:
            keywords = encode(value.keywords)
        except Unkeyable as err:
            err.push(".keywords")
            raise
        return frame(b"w", encode_str(func) + args + keywords)
    if isinstance(value, types.FunctionType):
        return frame(b"R", encode_str("function") + encode_str(_ref_name(value)))
    if isinstance(value, type):
        return frame(b"R", encode_str("class") + encode_str(_ref_name(value)))
    raise Unkeyable(value, _unkeyable_reason(value))


def _ref_name(obj: Any) -> str:
    """``module.qualname`` of an object reachable under that name, else unkeyable."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise Unkeyable(obj, "it has no module-level name")
    if "<lambda>" in qualname:
        raise Unkeyable(obj, "a lambda has no stable identity; use a module-level function")
    if "<locals>" in qualname:
        raise Unkeyable(obj, "it is defined inside a function, so its name does not identify it")
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not (
        target is obj
        or getattr(target, "__func__", None) is obj
        or (callable(target) and inspect.unwrap(target) is obj)
    ):
        raise Unkeyable(obj, f"{module}.{qualname} does not name this object")
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
        return frame(b"g", _array_payload(np.asarray(value), np))
    if type(value) is np.ndarray:
        return frame(b"n", _array_payload(value, np))
    # Subclasses (masked arrays, matrices) keep their class; masks are part of the value.
    extra = b""
    masked = getattr(np, "ma", None)
    if masked is not None and isinstance(value, masked.MaskedArray):
        extra = _array_payload(masked.getmaskarray(value), np)
        value = value.data
    return frame(b"n", _class_id(type(value)) + _array_payload(np.asarray(value), np) + extra)


def _array_payload(array: Any, np: Any) -> bytes:
    dtype = array.dtype
    shape = encode(tuple(int(n) for n in array.shape))
    if dtype.hasobject or dtype.kind == "T":
        if dtype.fields is not None:
            raise Unkeyable(array, "a structured array with object fields")
        return encode_str(dtype.kind) + shape + frame(b"l", _seq_payload(array.ravel(order="C")))
    if dtype.fields is not None:
        dtype_id = encode(dtype.descr)
    else:
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
            array = array.astype(dtype.newbyteorder("<"))
            dtype = array.dtype
        dtype_id = encode_str(dtype.str)
    flat = np.ascontiguousarray(array).reshape(-1)
    if dtype.kind in "fc" and flat.size:
        parts = flat.view(flat.real.dtype) if dtype.kind == "c" else flat
        nans = np.isnan(parts)
        if nans.any():
            parts = parts.copy()
            parts[nans] = np.nan
            flat = parts
    digest = hashlib.sha256(flat.view(np.uint8)).digest()
    return dtype_id + shape + frame(b"b", digest)


def _enc_pandas(value: Any, pd: Any) -> bytes | None:
    if isinstance(value, pd.DataFrame):
        parts = [_index_payload(value.columns), _index_payload(value.index)]
        for i in range(value.shape[1]):
            try:
                parts.append(_values_payload(value.iloc[:, i]))
            except Unkeyable as err:
                err.push(f".iloc[:, {i}]")
                raise
        return frame(b"X", b"F" + b"".join(parts))
    if isinstance(value, pd.Series):
        try:
            name = encode(value.name)
        except Unkeyable as err:
            err.push(".name")
            raise
        return frame(b"X", b"S" + name + _index_payload(value.index) + _values_payload(value))
    if isinstance(value, pd.Index):
        return frame(b"X", b"I" + _index_payload(value))
    if value is pd.NaT:
        return frame(b"x", b"T")
    if value is pd.NA:
        return frame(b"x", b"A")
    if isinstance(value, pd.Timestamp):
        plain = value.to_pydatetime(warn=False)
        return frame(b"x", b"t" + _enc_datetime(plain) + encode_int(value.nanosecond))
    if isinstance(value, pd.Timedelta):
        plain_delta = value.to_pytimedelta()
        return frame(b"x", b"d" + _enc_timedelta(plain_delta) + encode_int(value.nanoseconds))
    if isinstance(value, pd.Period):
        return frame(b"x", b"p" + encode_str(value.freqstr) + encode_int(value.ordinal))
    if isinstance(value, pd.Interval):
        return frame(b"x", b"i" + _seq_payload((value.left, value.right, value.closed)))
    return None


def _index_payload(index: Any) -> bytes:
    try:
        names = encode(list(index.names))
    except Unkeyable as err:
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
    return encode_str(str(dtype)) + extra + _array_payload(values, np)


def canonical_bytes(value: object) -> bytes:
    """Return the canonical, stable encoding of ``value`` (see the module docstring).

    Equal values of the same types always give equal bytes, in any process,
    on any machine. Raises :class:`ConfigurationError` for a value (or a part
    of it) that has no value identity; the message names the path to it.
    """
    try:
        return encode(value)
    except Unkeyable as err:
        raise ConfigurationError(
            err.describe("value") + ". Give the type a __cache_key__ method, or leave it out."
        ) from None
    except RecursionError:
        raise ConfigurationError(
            "cannot derive a cache key: the value is nested too deeply or contains itself"
        ) from None
