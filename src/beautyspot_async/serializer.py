# Over 500 lines: the codec, its registry rules and their error messages read as one unit.
"""The default serializer: msgpack plus a registry of extension types, no pickle.

Every cached result goes through :class:`MsgpackSerializer`. Plain data
(``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``dict``)
takes msgpack's C path untouched. Everything else travels as a msgpack
*extension* (``ExtType(code, payload)``): either one of the serializer's own
exact encodings of a built-in type, or a type the user registered with
:meth:`MsgpackSerializer.register_type`.

Round trips are exact: a decoded value is equal to, and of the same type as,
the encoded one. ``list`` and ``tuple`` are never confused, dict keys keep
their type (``int``, ``tuple``, ``bool``, ``None``...), aware datetimes keep
their offset. The exceptions, chosen and documented:

* ``bytearray`` and ``memoryview`` are packed natively as msgpack ``bin`` and
  come back as ``bytes`` (equal content, immutable type).
* A subclass of a *user-registered* type is encoded by its nearest registered
  base (along the MRO) and comes back as whatever that base's decoder returns,
  usually an instance of the base. Register the subclass itself to keep it.
* A subclass of a *built-in* type (``IntEnum`` members, ``namedtuple``,
  ``OrderedDict``, ``str`` subclasses, ``pandas.Timestamp``...) is not silently
  turned into its base: it raises :class:`SerializationError` until registered.
* An aware ``datetime``/``time`` whose tzinfo is neither ``datetime.timezone``
  nor ``zoneinfo.ZoneInfo`` (pytz, dateutil) comes back with a fixed-offset
  ``datetime.timezone`` of the same offset: same instant, same ``utcoffset()``.

Reserved extension codes (:data:`RESERVED_CODES`, ``112..127``); registering
one of them is a :class:`~beautyspot_async.exceptions.ConfigurationError`:

====  ==================  ==================================================
code  type                payload
====  ==================  ==================================================
112   ``tuple``           msgpack array of the items
113   ``set``             msgpack array of the items
114   ``frozenset``       msgpack array of the items
115   ``datetime``        ``[y, mo, d, h, mi, s, us, fold, tz]``
116   ``date``            proleptic Gregorian ordinal
117   ``time``            ``[h, mi, s, us, fold, tz]``
118   ``timedelta``       ``[days, seconds, microseconds]``
119   ``Decimal``         ``str(value)`` as ASCII (precision, exponent, NaN kept)
120   ``UUID``            the 16 raw bytes
121   ``complex``         two little-endian IEEE-754 doubles
122   ``int`` > 64 bits   two's-complement big-endian bytes
123-127                   reserved for future built-in encodings
====  ==================  ==================================================

``tz`` is ``None`` for naive values, else ``[offset_us, name, zone_key]``:
the UTC offset in microseconds, the ``timezone`` name when it is not the
default one, and the ``ZoneInfo`` key when there is one. A zone key that
cannot be loaded where the value is decoded falls back to the fixed offset.

Nesting is bounded: at most :data:`MAX_DEPTH` extension values (tuples, sets,
dates, registered types...) may sit inside one another. Decoding each level
costs a nested msgpack call with a large C-stack frame, and a few hundred
levels overflow the stack and kill the interpreter, so :meth:`~MsgpackSerializer.dumps`
refuses deeper values and :meth:`~MsgpackSerializer.loads` refuses deeper
data as corrupt. Plain lists and dicts do not count: msgpack walks them
without recursing.

User codes are ``0..111``. The payload of a user extension is the msgpack
encoding of whatever the encoder returned, so the decoder receives exactly
that value back (bytes stay bytes, a tuple stays a tuple, nested registered
types are decoded first).

Thread safety: registration builds a new immutable lookup and swaps it in
under a lock; :meth:`~MsgpackSerializer.dumps` and
:meth:`~MsgpackSerializer.loads` read one snapshot and take no lock.
"""

from __future__ import annotations

import datetime as _dt
import struct
import threading
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol, TypeVar, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from msgpack import ExtType

from .exceptions import ConfigurationError, SerializationError

__all__ = [
    "MAX_DEPTH",
    "RESERVED_CODES",
    "MsgpackSerializer",
    "Serializer",
    "default_serializer",
]

_T = TypeVar("_T")
_C = TypeVar("_C")

#: Extension codes the serializer keeps for its own encodings of built-ins.
RESERVED_CODES: Final[range] = range(112, 128)

_USER_CODES: Final[range] = range(RESERVED_CODES.start)

#: How many extension values may nest inside one another. Each decoded level
#: holds a ~40 KB msgpack unpack context on the C stack; about 180 levels
#: overflow an 8 MB thread stack (a segfault, not an exception), so the bound
#: keeps well below that.
MAX_DEPTH: Final = 100

_TUPLE: Final = 112
_SET: Final = 113
_FROZENSET: Final = 114
_DATETIME: Final = 115
_DATE: Final = 116
_TIME: Final = 117
_TIMEDELTA: Final = 118
_DECIMAL: Final = 119
_UUID: Final = 120
_COMPLEX: Final = 121
_BIGINT: Final = 122

# Built-in types with an exact encoding of their own; `int` is absent because
# only ints beyond 64 bits reach the serializer, and users cannot register int.
_BUILTIN_CODES: Final[Mapping[type, int]] = {
    tuple: _TUPLE,
    set: _SET,
    frozenset: _FROZENSET,
    _dt.datetime: _DATETIME,
    _dt.date: _DATE,
    _dt.time: _TIME,
    _dt.timedelta: _TIMEDELTA,
    Decimal: _DECIMAL,
    uuid.UUID: _UUID,
    complex: _COMPLEX,
}

# Types msgpack packs itself before `default` is ever consulted (strict_types
# only affects subclasses), so an encoder registered for them would never run.
_NATIVE_TYPES: Final[frozenset[type]] = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict}
)

# Built-in codes whose payload is itself msgpack (the others are raw bytes).
_MSGPACK_PAYLOADS: Final = frozenset(
    {_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA}
)

_COMPLEX_STRUCT: Final = struct.Struct("<dd")

# ExtType(...) re-validates code and payload in Python on every call; ours are
# valid by construction (codes checked at registration, payloads are bytes).
_make_ext: Final[Callable[[tuple[int, bytes]], ExtType]] = ExtType._make

# Encoders and decoders take the nesting level their own payload is at.
_Encode = Callable[[Any, int], bytes]
_Decode = Callable[[bytes, int], Any]


@runtime_checkable
class Serializer(Protocol):
    """Anything with ``dumps``/``loads`` can serialize a task's results.

    ``loads(dumps(x))`` must return a value equal to ``x``; ``loads`` must
    raise :class:`SerializationError` on bytes it cannot decode, so the
    pipeline can treat the entry as corrupt.
    """

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: bytes, /) -> Any: ...


class _UnknownTypeError(SerializationError):
    """Internal: carries the unencodable value up to ``dumps`` for the message."""

    def __init__(self, value: object) -> None:
        super().__init__(_qualname(type(value)))
        self.value = value


class _TooDeepError(SerializationError):
    """Internal: a value or payload nests more than MAX_DEPTH extension levels."""


class _UnknownCodeError(SerializationError):
    """Internal: decoding met an ext code this process has no decoder for."""

    def __init__(self, code: int) -> None:
        super().__init__(f"unknown ext code {code}")
        self.code = code


class _UnregisteredTypeError(SerializationError):
    """Stored data is intact but uses an ext code not registered in this process.

    Not corruption: the entry must be kept and the function not re-run (it
    may be a paid call), so the pipeline re-raises this instead of
    recomputing. ``code`` is the ext code found.
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def _qualname(type_: type) -> str:
    module = type_.__module__
    if module == "builtins":
        return type_.__qualname__
    return f"{module}.{type_.__qualname__}"


def _user_types_hint() -> str:
    return f"a free code in {_USER_CODES.start}..{_USER_CODES.stop - 1}"


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


class _Registration:
    __slots__ = ("code", "decoder", "encoder", "type_")

    def __init__(
        self,
        type_: type,
        code: int,
        encoder: Callable[[Any], Any],
        decoder: Callable[[Any], Any],
    ) -> None:
        self.type_ = type_
        self.code = code
        self.encoder = encoder
        self.decoder = decoder


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


class _Frozen:
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
        "_resolved",
        "_user",
        "default",
        "ext_hook",
    )

    def __init__(self, user: tuple[_Registration, ...]) -> None:
        self._user = {r.type_: r for r in user}
        self._resolved: dict[type, tuple[int, _Encode]] = {}

        pack = self._pack
        unpack = self._unpack
        by_type: dict[type, tuple[int, _Encode]] = {
            tuple: (_TUPLE, lambda v, lv: pack(list(v), lv)),
            set: (_SET, lambda v, lv: pack(list(v), lv)),
            frozenset: (_FROZENSET, lambda v, lv: pack(list(v), lv)),
            _dt.datetime: (_DATETIME, lambda v, lv: pack(_encode_datetime(v), lv)),
            _dt.date: (_DATE, lambda v, lv: pack(v.toordinal(), lv)),
            _dt.time: (_TIME, lambda v, lv: pack(_encode_time(v), lv)),
            _dt.timedelta: (
                _TIMEDELTA,
                lambda v, lv: pack([v.days, v.seconds, v.microseconds], lv),
            ),
            Decimal: (_DECIMAL, lambda v, lv: str(v).encode("ascii")),
            uuid.UUID: (_UUID, lambda v, lv: v.bytes),
            complex: (_COMPLEX, lambda v, lv: _COMPLEX_STRUCT.pack(v.real, v.imag)),
            # Only reached for ints msgpack cannot hold in 64 bits.
            int: (_BIGINT, lambda v, lv: _encode_bigint(v)),
        }
        decoders: dict[int, _Decode] = {
            _TUPLE: lambda d, lv: tuple(unpack(d, lv)),
            _SET: lambda d, lv: set(unpack(d, lv)),
            _FROZENSET: lambda d, lv: frozenset(unpack(d, lv)),
            _DATETIME: lambda d, lv: _decode_datetime(unpack(d, lv)),
            _DATE: lambda d, lv: _dt.date.fromordinal(unpack(d, lv)),
            _TIME: lambda d, lv: _decode_time(unpack(d, lv)),
            _TIMEDELTA: lambda d, lv: _dt.timedelta(*unpack(d, lv)),
            _DECIMAL: lambda d, lv: Decimal(d.decode("ascii")),
            _UUID: lambda d, lv: uuid.UUID(bytes=bytes(d)),
            _COMPLEX: lambda d, lv: _decode_complex(d),
            _BIGINT: lambda d, lv: _decode_bigint(d),
        }
        for reg in user:
            by_type[reg.type_] = (reg.code, self._user_encoder(reg))
            decoders[reg.code] = self._user_decoder(reg)
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

    def _user_encoder(self, reg: _Registration) -> _Encode:
        encoder = reg.encoder
        pack = self._pack

        def encode(obj: Any, level: int) -> bytes:
            try:
                value = encoder(obj)
            except Exception as exc:
                raise SerializationError(
                    f"the encoder registered for {_qualname(reg.type_)} (code {reg.code}) "
                    f"raised {type(exc).__name__} on a {_qualname(type(obj))} value: {exc}"
                ) from exc
            return pack(value, level)

        return encode

    def _user_decoder(self, reg: _Registration) -> _Decode:
        decoder = reg.decoder
        unpack = self._unpack

        def decode(data: bytes, level: int) -> Any:
            value = unpack(data, level)
            try:
                return decoder(value)
            except Exception as exc:
                raise SerializationError(
                    f"the decoder registered for {_qualname(reg.type_)} (code {reg.code}) "
                    f"raised {type(exc).__name__}: {exc}"
                ) from exc

        return decode

    def _default_at(self, level: int) -> Callable[[Any], ExtType]:
        """The ``default`` callback for values met ``level`` ext values deep."""
        if level >= MAX_DEPTH:
            # Refused here, so nothing is written that a hook would refuse to read.
            def too_deep(obj: Any) -> ExtType:
                raise _TooDeepError

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
                return _make_ext((_TUPLE, payload))
            entry = by_type.get(cls) or resolved.get(cls)
            if entry is None:
                entry = resolve(obj)
            code, encode = entry
            return _make_ext((code, encode(obj, inner)))

        return default

    def _resolve(self, obj: Any) -> tuple[int, _Encode]:
        cls = type(obj)
        for base in cls.__mro__[1:]:
            reg = self._user.get(base)
            if reg is not None:
                entry = self._by_type[reg.type_]
                self._resolved[cls] = entry
                return entry
        raise _UnknownTypeError(obj)

    def _hook_at(self, level: int) -> Callable[[int, bytes], Any]:
        """The ``ext_hook`` for ext values met ``level`` ext values deep."""
        if level >= MAX_DEPTH:
            # The bound that keeps a hostile or damaged payload from recursing
            # the C stack away; see MAX_DEPTH.
            def too_deep(code: int, data: bytes) -> Any:
                raise _TooDeepError

            return too_deep
        inner = level + 1
        hooks = self._hooks
        decoders = self._decoders
        unpackb = msgpack.unpackb

        def ext_hook(code: int, data: bytes) -> Any:
            if code == _TUPLE:
                return tuple(unpackb(data, ext_hook=hooks[inner], strict_map_key=False, raw=False))
            decode = decoders.get(code)
            if decode is None:
                raise _UnknownCodeError(code)
            return decode(data, inner)

        return ext_hook

    def hook_at(self, level: int) -> Callable[[int, bytes], Any]:
        return self._hooks[min(level, MAX_DEPTH)]

    def user_types(self) -> dict[int, type]:
        return {r.code: r.type_ for r in self._user.values()}


def _well_formed(data: bytes, level: int = 0) -> bool:
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
        elif ok and (code in _USER_CODES or code in _MSGPACK_PAYLOADS):
            ok = _well_formed(payload, level + 1)

    try:
        msgpack.unpackb(data, ext_hook=hook, strict_map_key=False, raw=False)
    except Exception:
        return False
    return ok


def _unregistered_message(code: int) -> str:
    if code in RESERVED_CODES:
        return (
            f"stored data uses msgpack ext code {code}, reserved for a built-in encoding this "
            "version of beautyspot-async does not know: a newer version wrote it. The entry is "
            "kept and the function was not run; upgrade beautyspot-async to read it"
        )
    return (
        f"stored data uses msgpack ext code {code}, which no type is registered for in this "
        "process. The entry is kept and the function was not run (that could re-bill a paid "
        "call): register the type it was stored with, as the program that stored it did, e.g. "
        f"spot.register_type(type_=YourType, code={code}, encoder=..., decoder=...)"
    )


# -- public serializer ---------------------------------------------------------


def _find_path(root: Any, target: object, limit: int = 100_000) -> str | None:
    """Say where ``target`` (by identity) sits inside plain containers, for messages."""
    # (value, index path below "result", note once inside a dict key or a set)
    stack: list[tuple[Any, str, str | None]] = [(root, "", None)]
    seen = 0
    while stack and seen < limit:
        value, path, note = stack.pop()
        seen += 1
        if value is target:
            return note or f"at result{path}"
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((v, f"{path}[{k!r}]", note))
                stack.append((k, path, note or f"in a dict key at result{path}"))
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{path}[{i}]", note) for i, v in enumerate(value))
        elif isinstance(value, set | frozenset):
            stack.extend((v, path, note or f"in a set at result{path}") for v in value)
    return None


def _unknown_type_message(root: Any, value: object) -> str:
    cls = type(value)
    name = _qualname(cls)
    where = ""
    if value is not root:
        where = " " + (_find_path(root, value) or "inside the result")
    builtin_base = next(
        (b for b in cls.__mro__[1:] if b in _NATIVE_TYPES or b in _BUILTIN_CODES),
        None,
    )
    note = ""
    if builtin_base is not None:
        note = (
            f" It subclasses {_qualname(builtin_base)}, but only the exact built-in type is "
            "encoded, so that the cached value does not come back as a different type."
        )
    return (
        f"cannot serialize a value of type {name}{where}: no encoder is registered for it "
        f"(pickle is never used).{note} Register it, e.g. "
        f"spot.register_type(type_={cls.__qualname__}, code=<{_user_types_hint()}>, "
        "encoder=lambda v: ..., decoder=lambda data: ...)"
    )


class MsgpackSerializer:
    """msgpack with an extension-type registry; see the module docstring.

    ``dumps`` and ``loads`` are safe to call from many threads at once;
    registration is serialised by a lock and takes effect for calls that
    start after it returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registrations: tuple[_Registration, ...] = ()
        self._frozen = _Frozen(())

    def __repr__(self) -> str:
        types = ", ".join(
            f"{code}={_qualname(t)}" for code, t in sorted(self._frozen.user_types().items())
        )
        return f"{type(self).__name__}({types})"

    # -- registry --------------------------------------------------------------

    def register_type(
        self,
        type_: type,
        code: int,
        encoder: Callable[[Any], Any],
        decoder: Callable[[Any], Any],
    ) -> None:
        """Encode instances of ``type_`` (and of its subclasses) as ext ``code``.

        ``encoder(value)`` may return any value this serializer can encode,
        including bytes, tuples and other registered types; ``decoder``
        receives exactly that value back and returns the reconstructed object.
        Subclasses without their own registration use the nearest registered
        base along the MRO and decode to whatever that base's decoder returns.

        Raises :class:`ConfigurationError` for a code outside ``0..111``
        (``112..127`` are :data:`RESERVED_CODES`), a code or a type already
        registered, a type msgpack or this serializer already encodes, or a
        non-callable encoder/decoder.
        """
        if not isinstance(type_, type):
            raise ConfigurationError(
                f"register_type(type_=...) needs a class, got {type_!r}; "
                "pass the class itself, e.g. type_=MyModel"
            )
        name = _qualname(type_)
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigurationError(
                f"register_type(code=...) for {name} needs an int, got {code!r}; "
                f"use {_user_types_hint()}"
            )
        if code in RESERVED_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {name}) is reserved by the serializer for its own "
                f"encodings of built-in types (codes {RESERVED_CODES.start}.."
                f"{RESERVED_CODES.stop - 1}); use {_user_types_hint()}"
            )
        if code not in _USER_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {name}) is out of range: msgpack ext codes run "
                f"0..127 and negative codes belong to the msgpack spec; use {_user_types_hint()}"
            )
        if type_ in _NATIVE_TYPES:
            raise ConfigurationError(
                f"{name} is encoded natively by msgpack, so an encoder for it would never run; "
                "register your own subclass or wrapper type instead"
            )
        builtin_code = _BUILTIN_CODES.get(type_)
        if builtin_code is not None:
            raise ConfigurationError(
                f"{name} already has an exact built-in encoding (reserved code {builtin_code}); "
                "it needs no registration. To encode it differently, wrap it in your own type"
            )
        if not callable(encoder) or not callable(decoder):
            raise ConfigurationError(
                f"register_type for {name} needs callable encoder= and decoder= "
                f"(got encoder={encoder!r}, decoder={decoder!r})"
            )
        with self._lock:
            for reg in self._registrations:
                if reg.code == code:
                    raise ConfigurationError(
                        f"ext code {code} is already registered for {_qualname(reg.type_)}; "
                        f"pick another code for {name} ({self._free_codes_hint()})"
                    )
                if reg.type_ is type_:
                    raise ConfigurationError(
                        f"{name} is already registered with ext code {reg.code}; "
                        "a type takes exactly one code (use a fresh serializer, or copy() one "
                        "made before the first registration, to change it)"
                    )
            registrations = (*self._registrations, _Registration(type_, code, encoder, decoder))
            # Build the whole new lookup before publishing it: readers see the
            # old snapshot or the new one, never a half-built one.
            frozen = _Frozen(registrations)
            self._registrations = registrations
            self._frozen = frozen

    def register(
        self,
        code: int,
        encoder: Callable[[Any], Any],
        decoder: Callable[[Any], Any],
    ) -> Callable[[type[_T]], type[_T]]:
        """Class-decorator form of :meth:`register_type`; returns the class unchanged."""

        def decorate(cls: type[_T]) -> type[_T]:
            self.register_type(type_=cls, code=code, encoder=encoder, decoder=decoder)
            return cls

        return decorate

    def registered_types(self) -> Mapping[int, type]:
        """The user registrations as ``{code: type}`` (a fresh dict)."""
        return self._frozen.user_types()

    def copy(self) -> MsgpackSerializer:
        """An independent serializer with the same registrations.

        Registering on the copy does not affect the original, nor the reverse.
        """
        clone = MsgpackSerializer()
        with self._lock:
            registrations = self._registrations
        clone._registrations = registrations
        clone._frozen = _Frozen(registrations)
        return clone

    def _free_codes_hint(self) -> str:
        used = {r.code for r in self._registrations}
        free = [c for c in _USER_CODES if c not in used][:5]
        if not free:
            return f"all of {_USER_CODES.start}..{_USER_CODES.stop - 1} are taken"
        return "free codes include " + ", ".join(map(str, free))

    def _decode_ext(self, code: int, payload: bytes, level: int) -> Any:
        """Decode one ext value found ``level`` ext values deep in a payload.

        For readers that walk msgpack data themselves (the CLI's lenient
        preview): the nesting below counts from ``level``, so their walk and
        this decoding stay within :data:`MAX_DEPTH` together. Raises
        :class:`SerializationError` as :meth:`loads` does.
        """
        try:
            return self._frozen.hook_at(level)(code, payload)
        except _UnknownCodeError as exc:
            raise SerializationError(_unregistered_message(exc.code)) from None
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"cannot decode ext code {code} ({type(exc).__name__}: {exc})"
            ) from exc

    # -- hot path --------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj`` to bytes.

        Raises :class:`SerializationError` naming the type (and where it sits
        inside containers) when a value has no encoding; nothing is returned
        in that case, so no partial payload can be stored.
        """
        frozen = self._frozen
        try:
            packed: bytes = msgpack.packb(
                obj, default=frozen.default, use_bin_type=True, strict_types=True
            )
            return packed
        except _UnknownTypeError as exc:
            raise SerializationError(_unknown_type_message(obj, exc.value)) from None
        except _TooDeepError:
            raise SerializationError(
                f"cannot serialize the value: it nests more than {MAX_DEPTH} levels of tuples, "
                "sets, dates or registered types, deeper than can be decoded safely, or a "
                "registered encoder returns a value of its own type. Flatten it (plain lists "
                "and dicts do not count towards the limit)"
            ) from None
        except SerializationError:
            raise
        except RecursionError as exc:
            raise SerializationError(
                "cannot serialize the value: it nests too deeply, contains a reference cycle, "
                "or a registered encoder returns a value of its own type"
            ) from exc
        except (ValueError, TypeError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize the value: {exc}") from exc

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode bytes produced by :meth:`dumps` (with the same registrations).

        Truncated or garbage input, trailing bytes, nesting deeper than
        :data:`MAX_DEPTH` or a failing decoder raise :class:`SerializationError`;
        the underlying error, if any, is chained as ``__cause__``. Intact data
        that merely uses an ext code not registered here raises one too, whose
        message names the code and how to register it: that entry is not
        corrupt, and the pipeline keeps it.
        """
        frozen = self._frozen
        try:
            return msgpack.unpackb(data, ext_hook=frozen.ext_hook, strict_map_key=False, raw=False)
        except _UnknownCodeError as exc:
            if _well_formed(bytes(data)):
                raise _UnregisteredTypeError(
                    _unregistered_message(exc.code), code=exc.code
                ) from None
            raise SerializationError(
                f"cannot decode {len(data)} bytes of msgpack data: they are damaged (and "
                f"mention ext code {exc.code}); the entry is corrupt"
            ) from exc
        except _TooDeepError:
            raise SerializationError(
                f"stored data nests more than {MAX_DEPTH} levels of extension values, deeper "
                "than can be decoded safely (dumps never writes that); the entry is corrupt"
            ) from None
        except SerializationError:
            raise
        except Exception as exc:
            # Corrupt input can surface as any of msgpack's errors, a bad
            # payload inside a built-in ext (ValueError, struct.error...) or an
            # unhashable decoded key (TypeError): all mean "cannot decode".
            # A wrongly typed stored field may hand us a non-bytes value too.
            what = (
                f"{len(data)} bytes of msgpack data"
                if isinstance(data, bytes | bytearray | memoryview)
                else f"a {type(data).__name__} (not bytes)"
            )
            raise SerializationError(
                f"cannot decode {what} "
                f"({type(exc).__name__}: {exc}); the entry is corrupt or was written "
                "with different type registrations"
            ) from exc


def default_serializer() -> MsgpackSerializer:
    """A new serializer with only the built-in encodings, nothing registered.

    Each call returns an independent instance, so types registered on one
    Spot's serializer never leak into another Spot.
    """
    return MsgpackSerializer()
