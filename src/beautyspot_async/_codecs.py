# Over 500 lines: each built-in encoding sits by its decoding and the lookup dispatching both.
"""The msgpack wire format: exact encodings of built-ins, and the frozen lookup.

Pure and synchronous. This module owns what goes on the wire: the reserved
extension codes ``112..127`` and the payload of each (the table is in
:mod:`beautyspot_async.serializer`, the public contract), the nesting bound
:data:`MAX_DEPTH`, and :class:`Frozen`, the immutable snapshot of built-in
plus registered types that ``dumps``/``loads`` use on the hot path. The
registry API and its error messages live in ``serializer``.
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from msgpack import ExtType

from . import _arrays
from .exceptions import SerializationError

__all__ = [
    "BUILTIN_CODES",
    "FROZENSET_CODE",
    "MAX_DEPTH",
    "NAMED_CODE",
    "NATIVE_TYPES",
    "RESERVED_CODES",
    "SET_CODE",
    "TUPLE_CODE",
    "USER_CODES",
    "Frozen",
    "NamedRegistration",
    "Registration",
    "TooDeepError",
    "UnknownCodeError",
    "UnknownNameError",
    "UnknownTypeError",
    "qualname",
    "user_types_hint",
    "well_formed",
]

_C = TypeVar("_C")

#: Extension codes the serializer keeps for its own encodings of built-ins.
RESERVED_CODES: Final[range] = range(112, 128)

USER_CODES: Final[range] = range(RESERVED_CODES.start)

#: How many extension values may nest inside one another. Each decoded level
#: holds a ~40 KB msgpack unpack context on the C stack; about 180 levels
#: overflow an 8 MB thread stack (a segfault, not an exception), so the bound
#: keeps well below that.
MAX_DEPTH: Final = 100

TUPLE_CODE: Final = 112
SET_CODE: Final = 113
FROZENSET_CODE: Final = 114
DATETIME_CODE: Final = 115
DATE_CODE: Final = 116
TIME_CODE: Final = 117
TIMEDELTA_CODE: Final = 118
DECIMAL_CODE: Final = 119
UUID_CODE: Final = 120
COMPLEX_CODE: Final = 121
BIGINT_CODE: Final = 122
#: A value of a class known by name (registered by class, or reached from a
#: marked function's annotation): ``[name, data]``.
NAMED_CODE: Final = 123

# Built-in types with an exact encoding of their own; `int` is absent because
# only ints beyond 64 bits reach the serializer, and users cannot register int.
BUILTIN_CODES: Final[Mapping[type, int]] = {
    tuple: TUPLE_CODE,
    set: SET_CODE,
    frozenset: FROZENSET_CODE,
    _dt.datetime: DATETIME_CODE,
    _dt.date: DATE_CODE,
    _dt.time: TIME_CODE,
    _dt.timedelta: TIMEDELTA_CODE,
    Decimal: DECIMAL_CODE,
    uuid.UUID: UUID_CODE,
    complex: COMPLEX_CODE,
}

# Types msgpack packs itself before `default` is ever consulted (strict_types
# only affects subclasses), so an encoder registered for them would never run.
NATIVE_TYPES: Final[frozenset[type]] = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict}
)

# Built-in codes whose payload is itself msgpack (the others are raw bytes).
_MSGPACK_PAYLOADS: Final = frozenset(
    {
        TUPLE_CODE,
        SET_CODE,
        FROZENSET_CODE,
        DATETIME_CODE,
        DATE_CODE,
        TIME_CODE,
        TIMEDELTA_CODE,
        NAMED_CODE,
        _arrays.PANDAS_CODE,
    }
)  # numpy's (124) is a header plus raw memory: a leaf

_COMPLEX_STRUCT: Final = struct.Struct("<dd")

# ExtType(...) re-validates code and payload in Python on every call; ours are
# valid by construction (codes checked at registration, payloads are bytes).
_make_ext: Final[Callable[[tuple[int, bytes]], ExtType]] = ExtType._make

# Encoders and decoders take the nesting level their own payload is at.
_Encode = Callable[[Any, int], bytes]
_Decode = Callable[[bytes, int], Any]


class UnknownTypeError(SerializationError):
    """Internal: carries the unencodable value up to ``dumps`` for the message."""

    def __init__(self, value: object) -> None:
        super().__init__(qualname(type(value)))
        self.value = value


class TooDeepError(SerializationError):
    """Internal: a value or payload nests more than MAX_DEPTH extension levels."""


class UnknownNameError(SerializationError):
    """Internal: decoding met a type name this process does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown type name {name!r}")
        self.name = name


class UnknownCodeError(SerializationError):
    """Internal: decoding met an ext code this process has no decoder for."""

    def __init__(self, code: int) -> None:
        super().__init__(f"unknown ext code {code}")
        self.code = code


def qualname(type_: type) -> str:
    module = type_.__module__
    if module == "builtins":
        return type_.__qualname__
    return f"{module}.{type_.__qualname__}"


def user_types_hint() -> str:
    return f"a free code in {USER_CODES.start}..{USER_CODES.stop - 1}"


# -- exact encodings of built-in types -----------------------------------------


# tzinfo objects are immutable and a program uses few of them, so their
# encodings (by identity) and decodings (by payload) are memoised. The memos
# only gain entries any thread would compute identically, hence no lock; the
# size bound keeps a stream of distinct zones from growing them forever.
_TZ_MEMO_LIMIT: Final = 256
_UTC_PAYLOAD: Final[list[Any]] = [0, None, None]
_fixed_tz_memo: dict[int, tuple[_dt.timezone, list[Any]]] = {}
_tz_decode_memo: dict[tuple[Any, ...], _dt.tzinfo | None] = {}


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _TZ_MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _encode_tz(tz: _dt.tzinfo | None, offset: _dt.timedelta | None) -> list[Any] | None:
    if tz is None:
        return None
    if tz is _dt.UTC:
        return _UTC_PAYLOAD
    offset_us = None if offset is None else offset // _dt.timedelta(microseconds=1)
    if isinstance(tz, ZoneInfo):
        return [offset_us, None, tz.key]
    if type(tz) is not _dt.timezone or offset is None:
        return [offset_us, None, None]
    hit = _fixed_tz_memo.get(id(tz))
    if hit is not None and hit[0] is tz:
        return hit[1]
    own = tz.tzname(None)
    # Only a name the user chose is kept; the default one is derived again.
    name = None if own == _dt.timezone(offset).tzname(None) else own
    encoded = [offset_us, name, None]
    _remember(_fixed_tz_memo, id(tz), (tz, encoded))
    return encoded


def _decode_tz(raw: list[Any] | None) -> _dt.tzinfo | None:
    if raw is None:
        return None
    memo_key = tuple(raw)
    try:
        return _tz_decode_memo[memo_key]
    except KeyError:
        pass
    except TypeError as exc:
        raise ValueError(f"malformed timezone payload {raw!r}") from exc
    tz = _build_tz(*raw)
    _remember(_tz_decode_memo, memo_key, tz)
    return tz


def _build_tz(offset_us: int | None, name: str | None, key: str | None) -> _dt.tzinfo | None:
    if key is not None:
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError):
            # The zone database here lacks the key: keep the instant and offset.
            pass
    if offset_us is None:
        return None
    offset = _dt.timedelta(microseconds=offset_us)
    return _dt.timezone(offset) if name is None else _dt.timezone(offset, name)


def _encode_datetime(v: _dt.datetime) -> list[Any]:
    tz = _encode_tz(v.tzinfo, v.utcoffset())
    return [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, tz]


def _decode_datetime(raw: list[Any]) -> _dt.datetime:
    y, mo, d, h, mi, s, us, fold, tz = raw
    return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_decode_tz(tz), fold=fold)


def _encode_time(v: _dt.time) -> list[Any]:
    tz = _encode_tz(v.tzinfo, v.utcoffset())
    return [v.hour, v.minute, v.second, v.microsecond, v.fold, tz]


def _decode_time(raw: list[Any]) -> _dt.time:
    h, mi, s, us, fold, tz = raw
    return _dt.time(h, mi, s, us, tzinfo=_decode_tz(tz), fold=fold)


def _encode_bigint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)


def _decode_bigint(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _decode_complex(data: bytes) -> complex:
    real, imag = _COMPLEX_STRUCT.unpack(data)
    return complex(real, imag)


# -- the frozen lookup ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """One user registration: instances of ``type_`` travel as ext ``code``."""

    type_: type
    code: int
    encoder: Callable[[Any], Any]
    decoder: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class NamedRegistration:
    """Instances of ``type_`` travel as ``[name, dump(value)]`` under :data:`NAMED_CODE`.

    ``dump`` turns a value into data the serializer can encode; ``load``
    receives that data back, decoded, and rebuilds the value.
    """

    type_: type
    name: str
    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]


class _Levels(dict[int, _C]):
    """One callback per nesting level, each made on first use.

    Most data is shallow, so building all MAX_DEPTH levels up front would
    slow every registration for nothing. Two threads may make the same level
    at once: the callbacks are equivalent, and either may stay.
    """

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[int], _C]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, level: int) -> _C:
        made = self._make(level)
        self[level] = made
        return made


class Frozen:
    """One immutable snapshot of the registry, used on the hot path.

    ``_by_type`` maps exact types to ``(code, encode)``. Subclasses of
    registered types are resolved along the MRO once and memoised in
    ``_resolved``; that memo only ever gains entries that every thread would
    compute identically, so concurrent writers are harmless.

    Nesting depth (see :data:`MAX_DEPTH`) is tracked without any per-thread
    state: there is one ``default`` and one ``ext_hook`` callback per level
    (made on first use), and each nested pack or unpack call is handed the
    next level's. Encoders
    and decoders take that level as their second argument.
    """

    __slots__ = (
        "_by_type",
        "_decoders",
        "_defaults",
        "_hooks",
        "_names",
        "_resolved",
        "_user",
        "default",
        "ext_hook",
    )

    def __init__(
        self, user: tuple[Registration, ...], named: tuple[NamedRegistration, ...] = ()
    ) -> None:
        self._user = {r.type_: r for r in user}
        self._names = {r.name: r for r in named}
        self._resolved: dict[type, tuple[int, _Encode]] = {}

        pack = self._pack
        unpack = self._unpack
        by_type: dict[type, tuple[int, _Encode]] = {
            tuple: (TUPLE_CODE, lambda v, lv: pack(list(v), lv)),
            set: (SET_CODE, lambda v, lv: pack(list(v), lv)),
            frozenset: (FROZENSET_CODE, lambda v, lv: pack(list(v), lv)),
            _dt.datetime: (DATETIME_CODE, lambda v, lv: pack(_encode_datetime(v), lv)),
            _dt.date: (DATE_CODE, lambda v, lv: pack(v.toordinal(), lv)),
            _dt.time: (TIME_CODE, lambda v, lv: pack(_encode_time(v), lv)),
            _dt.timedelta: (
                TIMEDELTA_CODE,
                lambda v, lv: pack([v.days, v.seconds, v.microseconds], lv),
            ),
            Decimal: (DECIMAL_CODE, lambda v, lv: str(v).encode("ascii")),
            uuid.UUID: (UUID_CODE, lambda v, lv: v.bytes),
            complex: (COMPLEX_CODE, lambda v, lv: _COMPLEX_STRUCT.pack(v.real, v.imag)),
            # Only reached for ints msgpack cannot hold in 64 bits.
            int: (BIGINT_CODE, lambda v, lv: _encode_bigint(v)),
        }
        decoders: dict[int, _Decode] = {
            TUPLE_CODE: lambda d, lv: tuple(unpack(d, lv)),
            SET_CODE: lambda d, lv: set(unpack(d, lv)),
            FROZENSET_CODE: lambda d, lv: frozenset(unpack(d, lv)),
            DATETIME_CODE: lambda d, lv: _decode_datetime(unpack(d, lv)),
            DATE_CODE: lambda d, lv: _dt.date.fromordinal(unpack(d, lv)),
            TIME_CODE: lambda d, lv: _decode_time(unpack(d, lv)),
            TIMEDELTA_CODE: lambda d, lv: _dt.timedelta(*unpack(d, lv)),
            DECIMAL_CODE: lambda d, lv: Decimal(d.decode("ascii")),
            UUID_CODE: lambda d, lv: uuid.UUID(bytes=bytes(d)),
            COMPLEX_CODE: lambda d, lv: _decode_complex(d),
            BIGINT_CODE: lambda d, lv: _decode_bigint(d),
            _arrays.NDARRAY_CODE: lambda d, lv: _arrays.decode(
                _arrays.NDARRAY_CODE, d, lambda b: unpack(b, lv)
            ),
            _arrays.PANDAS_CODE: lambda d, lv: _arrays.decode(
                _arrays.PANDAS_CODE, d, lambda b: unpack(b, lv)
            ),
        }
        for reg in user:
            by_type[reg.type_] = (reg.code, self._user_encoder(reg))
            decoders[reg.code] = self._user_decoder(reg)
        for named_reg in named:
            by_type.setdefault(named_reg.type_, (NAMED_CODE, self._named_encoder(named_reg)))
        decoders[NAMED_CODE] = self._decode_named
        self._by_type = by_type
        self._decoders = decoders
        self._defaults: _Levels[Callable[[Any], ExtType]] = _Levels(self._default_at)
        self._hooks: _Levels[Callable[[int, bytes], Any]] = _Levels(self._hook_at)
        self.default = self._defaults[0]
        self.ext_hook = self._hooks[0]

    def _pack(self, obj: Any, level: int) -> bytes:
        packed: bytes = msgpack.packb(
            obj, default=self._defaults[level], use_bin_type=True, strict_types=True
        )
        return packed

    def _unpack(self, data: bytes, level: int) -> Any:
        return msgpack.unpackb(data, ext_hook=self._hooks[level], strict_map_key=False, raw=False)

    def _user_encoder(self, reg: Registration) -> _Encode:
        encoder = reg.encoder
        pack = self._pack

        def encode(obj: Any, level: int) -> bytes:
            try:
                value = encoder(obj)
            except Exception as exc:
                raise SerializationError(
                    f"the encoder registered for {qualname(reg.type_)} (code {reg.code}) "
                    f"raised {type(exc).__name__} on a {qualname(type(obj))} value: {exc}"
                ) from exc
            return pack(value, level)

        return encode

    def _user_decoder(self, reg: Registration) -> _Decode:
        decoder = reg.decoder
        unpack = self._unpack

        def decode(data: bytes, level: int) -> Any:
            value = unpack(data, level)
            try:
                return decoder(value)
            except Exception as exc:
                raise SerializationError(
                    f"the decoder registered for {qualname(reg.type_)} (code {reg.code}) "
                    f"raised {type(exc).__name__}: {exc}"
                ) from exc

        return decode

    def _named_encoder(self, reg: NamedRegistration) -> _Encode:
        dump = reg.dump
        name = reg.name
        pack = self._pack

        def encode(obj: Any, level: int) -> bytes:
            try:
                data = dump(obj)
            except SerializationError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"the encoder registered for {name} raised {type(exc).__name__} on a "
                    f"{qualname(type(obj))} value: {exc}"
                ) from exc
            return pack([name, data], level)

        return encode

    def _decode_named(self, data: bytes, level: int) -> Any:
        item = self._unpack(data, level)
        if type(item) is not list or len(item) != 2 or type(item[0]) is not str:
            raise SerializationError("malformed named-type payload")
        name, value = item
        reg = self._names.get(name)
        if reg is None:
            raise UnknownNameError(name)
        try:
            return reg.load(value)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"the decoder registered for {name} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _default_at(self, level: int) -> Callable[[Any], ExtType]:
        """The ``default`` callback for values met ``level`` ext values deep."""
        if level >= MAX_DEPTH:
            # Refused here, so nothing is written that a hook would refuse to read.
            def too_deep(obj: Any) -> ExtType:
                raise TooDeepError

            return too_deep
        inner = level + 1
        defaults = self._defaults
        by_type = self._by_type
        resolved = self._resolved
        resolve = self._resolve

        def default(obj: Any) -> ExtType:
            cls = type(obj)
            if cls is tuple:
                # Tuples are by far the most common ext value: skip the lookup.
                payload = msgpack.packb(
                    list(obj), default=defaults[inner], use_bin_type=True, strict_types=True
                )
                return _make_ext((TUPLE_CODE, payload))
            entry = by_type.get(cls) or resolved.get(cls)
            if entry is None:
                entry = resolve(obj)
            code, encode = entry
            return _make_ext((code, encode(obj, inner)))

        return default

    def _resolve(self, obj: Any) -> tuple[int, _Encode]:
        cls = type(obj)
        arrays = _arrays.encoder_for(cls)
        if arrays is not None:
            code, encode_array = arrays
            entry = (code, lambda v, lv: encode_array(v, lambda x: self._pack(x, lv)))
            self._resolved[cls] = entry
            return entry
        for base in cls.__mro__[1:]:
            reg = self._user.get(base)
            if reg is not None:
                entry = self._by_type[reg.type_]
                self._resolved[cls] = entry
                return entry
        raise UnknownTypeError(obj)

    def _hook_at(self, level: int) -> Callable[[int, bytes], Any]:
        """The ``ext_hook`` for ext values met ``level`` ext values deep."""
        if level >= MAX_DEPTH:
            # The bound that keeps a hostile or damaged payload from recursing
            # the C stack away; see MAX_DEPTH.
            def too_deep(code: int, data: bytes) -> Any:
                raise TooDeepError

            return too_deep
        inner = level + 1
        hooks = self._hooks
        decoders = self._decoders
        unpackb = msgpack.unpackb

        def ext_hook(code: int, data: bytes) -> Any:
            if code == TUPLE_CODE:
                return tuple(unpackb(data, ext_hook=hooks[inner], strict_map_key=False, raw=False))
            decode = decoders.get(code)
            if decode is None:
                raise UnknownCodeError(code)
            return decode(data, inner)

        return ext_hook

    def hook_at(self, level: int) -> Callable[[int, bytes], Any]:
        return self._hooks[min(level, MAX_DEPTH)]

    def user_types(self) -> dict[int, type]:
        return {r.code: r.type_ for r in self._user.values()}

    def named_types(self) -> dict[str, type]:
        return {r.name: r.type_ for r in self._names.values()}


def well_formed(data: bytes, level: int = 0) -> bool:
    """Whether ``data`` parses completely, ext payloads included, whatever the codes mean.

    Tells an entry that merely uses an unregistered code (intact, keep it)
    apart from damaged bytes that happen to contain an ext marker (corrupt).
    """
    ok = True

    def hook(code: int, payload: bytes) -> None:
        nonlocal ok
        # msgpack's own (negative) codes are never written by dumps.
        if code < 0 or level >= MAX_DEPTH:
            ok = False
        elif ok and (code in USER_CODES or code in _MSGPACK_PAYLOADS):
            ok = well_formed(payload, level + 1)

    try:
        msgpack.unpackb(data, ext_hook=hook, strict_map_key=False, raw=False)
    except Exception:
        return False
    return ok
