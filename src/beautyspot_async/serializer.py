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
123                       reserved for a future built-in encoding
124   numpy ndarray,      u32 header length, msgpack header (dtype string,
      numpy scalars       shape, order), padding to 16, the raw memory
125   pandas DataFrame,   msgpack ``[kind, ...]``: index, columns, values
      Series, Index       (ndarrays or Python items), names, attrs
126-127                   reserved for future built-in encodings
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

The wire format itself (the built-in encodings, the depth bound, the frozen
lookup) lives in the private ``_codecs`` module; this one is the registry API.

Thread safety: registration builds a new immutable lookup and swaps it in
under a lock; :meth:`~MsgpackSerializer.dumps` and
:meth:`~MsgpackSerializer.loads` read one snapshot and take no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs

from ._codecs import (
    BUILTIN_CODES,
    MAX_DEPTH,
    NATIVE_TYPES,
    RESERVED_CODES,
    USER_CODES,
    Frozen,
    Registration,
    TooDeepError,
    UnknownCodeError,
    UnknownTypeError,
    qualname,
    user_types_hint,
    well_formed,
)
from .exceptions import ConfigurationError, SerializationError

__all__ = [
    "MAX_DEPTH",
    "RESERVED_CODES",
    "MsgpackSerializer",
    "Serializer",
    "default_serializer",
]

_T = TypeVar("_T")


@runtime_checkable
class Serializer(Protocol):
    """Anything with ``dumps``/``loads`` can serialize a task's results.

    ``loads(dumps(x))`` must return a value equal to ``x``; ``loads`` must
    raise :class:`SerializationError` on bytes it cannot decode, so the
    pipeline can treat the entry as corrupt.
    """

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: bytes, /) -> Any: ...


class _UnregisteredTypeError(SerializationError):
    """Stored data is intact but uses an ext code not registered in this process.

    Not corruption: the entry must be kept and the function not re-run (it
    may be a paid call), so the pipeline re-raises this instead of
    recomputing. ``code`` is the ext code found.
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


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
    name = qualname(cls)
    where = ""
    if value is not root:
        where = " " + (_find_path(root, value) or "inside the result")
    builtin_base = next(
        (b for b in cls.__mro__[1:] if b in NATIVE_TYPES or b in BUILTIN_CODES),
        None,
    )
    note = ""
    if builtin_base is not None:
        note = (
            f" It subclasses {qualname(builtin_base)}, but only the exact built-in type is "
            "encoded, so that the cached value does not come back as a different type."
        )
    return (
        f"cannot serialize a value of type {name}{where}: no encoder is registered for it "
        f"(pickle is never used).{note} Register it, e.g. "
        f"spot.register_type(type_={cls.__qualname__}, code=<{user_types_hint()}>, "
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
        self._registrations: tuple[Registration, ...] = ()
        self._frozen = Frozen(())

    def __repr__(self) -> str:
        types = ", ".join(
            f"{code}={qualname(t)}" for code, t in sorted(self._frozen.user_types().items())
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
        name = qualname(type_)
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigurationError(
                f"register_type(code=...) for {name} needs an int, got {code!r}; "
                f"use {user_types_hint()}"
            )
        if code in RESERVED_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {name}) is reserved by the serializer for its own "
                f"encodings of built-in types (codes {RESERVED_CODES.start}.."
                f"{RESERVED_CODES.stop - 1}); use {user_types_hint()}"
            )
        if code not in USER_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {name}) is out of range: msgpack ext codes run "
                f"0..127 and negative codes belong to the msgpack spec; use {user_types_hint()}"
            )
        if type_ in NATIVE_TYPES:
            raise ConfigurationError(
                f"{name} is encoded natively by msgpack, so an encoder for it would never run; "
                "register your own subclass or wrapper type instead"
            )
        builtin_code = BUILTIN_CODES.get(type_)
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
                        f"ext code {code} is already registered for {qualname(reg.type_)}; "
                        f"pick another code for {name} ({self._free_codes_hint()})"
                    )
                if reg.type_ is type_:
                    raise ConfigurationError(
                        f"{name} is already registered with ext code {reg.code}; "
                        "a type takes exactly one code (use a fresh serializer, or copy() one "
                        "made before the first registration, to change it)"
                    )
            registrations = (*self._registrations, Registration(type_, code, encoder, decoder))
            # Build the whole new lookup before publishing it: readers see the
            # old snapshot or the new one, never a half-built one.
            frozen = Frozen(registrations)
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
        clone._frozen = Frozen(registrations)
        return clone

    def _free_codes_hint(self) -> str:
        used = {r.code for r in self._registrations}
        free = [c for c in USER_CODES if c not in used][:5]
        if not free:
            return f"all of {USER_CODES.start}..{USER_CODES.stop - 1} are taken"
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
        except UnknownCodeError as exc:
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
        except UnknownTypeError as exc:
            raise SerializationError(_unknown_type_message(obj, exc.value)) from None
        except TooDeepError:
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
        except UnknownCodeError as exc:
            if well_formed(bytes(data)):
                raise _UnregisteredTypeError(
                    _unregistered_message(exc.code), code=exc.code
                ) from None
            raise SerializationError(
                f"cannot decode {len(data)} bytes of msgpack data: they are damaged (and "
                f"mention ext code {exc.code}); the entry is corrupt"
            ) from exc
        except TooDeepError:
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
