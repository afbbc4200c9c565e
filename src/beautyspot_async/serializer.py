# Over 500 lines: the registry API and the messages saying what to register belong together.
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
123   a named class       ``[name, data]``: a class registered by name, or
                          reached from a marked function's annotation
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

Classes can also be registered by name (``register_type`` without
``code=``): the payload is ``[name, data]`` and decoding resolves the name
only against this serializer's registrations (and, for a marked function,
the classes its return annotation reaches): never by importing anything.

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

from . import _schema
from ._codecs import (
    BUILTIN_CODES,
    MAX_DEPTH,
    NAMED_CODE,
    NATIVE_TYPES,
    RESERVED_CODES,
    USER_CODES,
    Frozen,
    NamedRegistration,
    Registration,
    TooDeepError,
    UnknownCodeError,
    UnknownNameError,
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
    """Stored data is intact but names a type this process does not know.

    Not corruption: the entry must be kept and the function not re-run (it
    may be a paid call), so the pipeline re-raises this instead of
    recomputing. ``code`` is the ext code found, ``type_name`` the stored
    type name (for types registered by class).
    """

    def __init__(self, message: str, *, code: int, type_name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.type_name = type_name


def _unknown_name_message(name: str) -> str:
    module, _, qual = name.rpartition(".")
    # With name= spelled out the line is right whether the stored name is a
    # class's default module.qualname or one chosen at registration.
    fix = f'spot.register_type(type_={qual if module else "YourClass"}, name="{name}")'
    return (
        f"stored data holds a value of type {name!r}, which this process does not know: "
        "it is neither registered here nor reachable from the marked function's return "
        "annotation, and stored data never makes beautyspot-async import a module. The entry "
        f"is kept and the function was not run (that could re-bill a paid call). Fix: {fix} "
        "before the call, or annotate the function's return type with it"
    )


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
    if _schema.is_structured(cls):
        base = next((b for b in cls.__mro__[1:] if _schema.is_structured(b)), None)
        if base is not None and not issubclass(base, tuple):
            note = (
                f" It subclasses {qualname(base)}, but a return annotation or a registration "
                "covers exactly the class it names, not its subclasses."
            )
        return (
            f"cannot serialize a value of type {name}{where}: the marked function's return "
            f"annotation does not name it and it is not registered (pickle is never used).{note} "
            f"Register it by class, once per process: spot.register_type(type_={cls.__qualname__})"
            f", or annotate the function's return type with it"
        )
    return (
        f"cannot serialize a value of type {name}{where}: no encoder is registered for it "
        f"(pickle is never used).{note} Register it, e.g. "
        f"spot.register_type(type_={cls.__qualname__}, "
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
        self._named: tuple[NamedRegistration, ...] = ()
        self._frozen = Frozen(())

    def __repr__(self) -> str:
        types = [f"{code}={qualname(t)}" for code, t in sorted(self._frozen.user_types().items())]
        types += [f"{name!r}={qualname(t)}" for name, t in self._frozen.named_types().items()]
        return f"{type(self).__name__}({', '.join(types)})"

    # -- registry --------------------------------------------------------------

    def register_type(
        self,
        type_: type,
        code: int | None = None,
        encoder: Callable[[Any], Any] | None = None,
        decoder: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Teach the serializer ``type_``, by class name or by numeric ext code.

        **By class** (no ``code``): instances are stored as
        ``[name, data]`` under a name that does not change between processes,
        ``module.qualname`` unless ``name=`` says otherwise. A pydantic model,
        dataclass, ``NamedTuple`` or ``Enum`` needs nothing else: its fields
        are the data. Any other class needs ``encoder``/``decoder``. Only the
        class itself is covered; register subclasses on their own.

        **By code** (the seed's form): instances of ``type_`` (and of its
        subclasses) travel as ext ``code`` in ``0..111``. ``encoder(value)``
        may return any value this serializer can encode, including bytes,
        tuples and other registered types; ``decoder`` receives exactly that
        value back. Subclasses without their own registration use the nearest
        code-registered base along the MRO.

        Raises :class:`ConfigurationError` for a code outside ``0..111``
        (``112..127`` are :data:`RESERVED_CODES`), a code, name or type already
        registered, a type msgpack or this serializer already encodes, or
        missing or non-callable encoder/decoder.
        """
        if not isinstance(type_, type):
            raise ConfigurationError(
                f"register_type(type_=...) needs a class, got {type_!r}; "
                "pass the class itself, e.g. type_=MyModel"
            )
        type_name = qualname(type_)
        if type_ in NATIVE_TYPES:
            raise ConfigurationError(
                f"{type_name} is encoded natively by msgpack, so an encoder for it would never "
                "run; register your own subclass or wrapper type instead"
            )
        builtin_code = BUILTIN_CODES.get(type_)
        if builtin_code is not None:
            raise ConfigurationError(
                f"{type_name} already has an exact built-in encoding (reserved code "
                f"{builtin_code}); it needs no registration. To encode it differently, wrap it "
                "in your own type"
            )
        if code is None:
            self._register_named(type_, name, encoder, decoder)
            return
        if name is not None:
            raise ConfigurationError(
                f"register_type for {type_name}: pass code= (the numeric form) or name= (the "
                "by-class form), not both"
            )
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigurationError(
                f"register_type(code=...) for {type_name} needs an int, got {code!r}; "
                f"use {user_types_hint()}, or leave code= out to register by class name"
            )
        if code in RESERVED_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {type_name}) is reserved by the serializer for its "
                f"own encodings of built-in types (codes {RESERVED_CODES.start}.."
                f"{RESERVED_CODES.stop - 1}); use {user_types_hint()}"
            )
        if code not in USER_CODES:
            raise ConfigurationError(
                f"ext code {code} (asked for {type_name}) is out of range: msgpack ext codes run "
                f"0..127 and negative codes belong to the msgpack spec; use {user_types_hint()}"
            )
        if not callable(encoder) or not callable(decoder):
            raise ConfigurationError(
                f"register_type for {type_name} needs callable encoder= and decoder= "
                f"(got encoder={encoder!r}, decoder={decoder!r})"
            )
        with self._lock:
            self._check_free(type_)
            for reg in self._registrations:
                if reg.code == code:
                    raise ConfigurationError(
                        f"ext code {code} is already registered for {qualname(reg.type_)}; "
                        f"pick another code for {type_name} ({self._free_codes_hint()})"
                    )
            registrations = (*self._registrations, Registration(type_, code, encoder, decoder))
            self._publish(registrations, self._named)

    def _register_named(
        self,
        type_: type,
        name: str | None,
        encoder: Callable[[Any], Any] | None,
        decoder: Callable[[Any], Any] | None,
    ) -> None:
        type_name = qualname(type_)
        if name is None:
            name = _schema.type_name(type_)
        elif not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"register_type(name=...) for {type_name} needs a non-empty str, got {name!r}"
            )
        if encoder is None and decoder is None:
            node = _schema.class_node(type_)
            if node is None:
                raise ConfigurationError(
                    f"{type_name} is not a pydantic model, dataclass, NamedTuple or Enum, so "
                    "its data cannot be derived from its fields; pass encoder= and decoder= "
                    f"too: spot.register_type(type_={type_.__qualname__}, encoder=lambda v: ..., "
                    "decoder=lambda data: ...)"
                )
            encoder, decoder = node.dump, node.load
        elif not callable(encoder) or not callable(decoder):
            raise ConfigurationError(
                f"register_type for {type_name} needs both encoder= and decoder= as callables, "
                f"or neither for a pydantic model or dataclass (got encoder={encoder!r}, "
                f"decoder={decoder!r})"
            )
        with self._lock:
            self._check_free(type_)
            for named in self._named:
                if named.name == name:
                    raise ConfigurationError(
                        f"the name {name!r} is already registered for {qualname(named.type_)}; "
                        f"give {type_name} another one with name=..."
                    )
            named_regs = (*self._named, NamedRegistration(type_, name, encoder, decoder))
            self._publish(self._registrations, named_regs)

    def _check_free(self, type_: type) -> None:
        for reg in self._registrations:
            if reg.type_ is type_:
                raise ConfigurationError(
                    f"{qualname(type_)} is already registered with ext code {reg.code}; "
                    "a type is registered once (use a fresh serializer, or copy() one made "
                    "before the first registration, to change it)"
                )
        for named in self._named:
            if named.type_ is type_:
                raise ConfigurationError(
                    f"{qualname(type_)} is already registered by class, as {named.name!r}; "
                    "a type is registered once"
                )

    def _publish(
        self, registrations: tuple[Registration, ...], named: tuple[NamedRegistration, ...]
    ) -> None:
        # Build the whole new lookup before publishing it: readers see the
        # old snapshot or the new one, never a half-built one.
        frozen = Frozen(registrations, named)
        self._registrations = registrations
        self._named = named
        self._frozen = frozen

    def register(
        self,
        code: int | None = None,
        encoder: Callable[[Any], Any] | None = None,
        decoder: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> Callable[[type[_T]], type[_T]]:
        """Class-decorator form of :meth:`register_type`; returns the class unchanged."""

        def decorate(cls: type[_T]) -> type[_T]:
            self.register_type(type_=cls, code=code, encoder=encoder, decoder=decoder, name=name)
            return cls

        return decorate

    def registered_types(self) -> Mapping[int, type]:
        """The registrations by code as ``{code: type}`` (a fresh dict)."""
        return self._frozen.user_types()

    def registered_names(self) -> Mapping[str, type]:
        """The registrations by class as ``{name: type}`` (a fresh dict)."""
        return self._frozen.named_types()

    def copy(self) -> MsgpackSerializer:
        """An independent serializer with the same registrations.

        Registering on the copy does not affect the original, nor the reverse.
        """
        clone = MsgpackSerializer()
        with self._lock:
            registrations, named = self._registrations, self._named
        clone._publish(registrations, named)
        return clone

    def scoped(self, scope: Mapping[str, _schema.ClassNode]) -> Serializer:
        """This serializer, also knowing the classes of one annotation by name.

        Used for a marked function: the classes its return annotation reaches
        may be stored (where the annotation alone does not pin the class) and
        read back by name, without being registered. Registrations made on
        this serializer later are seen too.
        """
        return _Scoped(self, scope)

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
        except UnknownNameError as exc:
            raise SerializationError(_unknown_name_message(exc.name)) from None
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
            # The common case inline (a call less on every miss); any failure
            # is redone by _dump, which turns it into the right error.
            packed: bytes = msgpack.packb(
                obj, default=frozen.default, use_bin_type=True, strict_types=True
            )
            return packed
        except Exception:
            return _dump(frozen, obj)

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode bytes produced by :meth:`dumps` (with the same registrations).

        Truncated or garbage input, trailing bytes, nesting deeper than
        :data:`MAX_DEPTH` or a failing decoder raise :class:`SerializationError`;
        the underlying error, if any, is chained as ``__cause__``. Intact data
        that merely names a type or ext code not registered here raises one
        too, whose message names the type and how to register it: that entry
        is not corrupt, and the pipeline keeps it.
        """
        frozen = self._frozen
        try:
            # Inline for the hit path; a failure is redone by _load for its error.
            return msgpack.unpackb(data, ext_hook=frozen.ext_hook, strict_map_key=False, raw=False)
        except Exception:
            return _load(frozen, data)


class _Scoped:
    """A serializer that also knows one annotation's classes by name; see ``scoped``."""

    __slots__ = ("_made", "_parent", "_scope")

    def __init__(self, parent: MsgpackSerializer, scope: Mapping[str, _schema.ClassNode]) -> None:
        self._parent = parent
        self._scope = dict(scope)
        self._made: tuple[Frozen | None, Frozen] = (None, parent._frozen)

    def _frozen(self) -> Frozen:
        base = self._parent._frozen
        made_from, frozen = self._made
        if made_from is not base:
            frozen = self._build()
            self._made = (base, frozen)
        return frozen

    def _build(self) -> Frozen:
        parent = self._parent
        with parent._lock:
            registrations, named = parent._registrations, parent._named
        taken = {r.type_ for r in registrations} | {n.type_ for n in named}
        names = {n.name for n in named}
        extra = tuple(
            NamedRegistration(node.cls, name, node.dump, node.load)
            for name, node in self._scope.items()
            if node.cls not in taken and name not in names
        )
        return Frozen(registrations, (*named, *extra))

    def dumps(self, obj: Any) -> bytes:
        return _dump(self._frozen(), obj)

    def loads(self, data: bytes | bytearray | memoryview) -> Any:
        made_from, frozen = self._made
        if made_from is not self._parent._frozen:
            frozen = self._frozen()
        return _load(frozen, data)


def _dump(frozen: Frozen, obj: Any) -> bytes:
    """Encode ``obj`` to bytes.

    Raises :class:`SerializationError` naming the type (and where it sits
    inside containers) when a value has no encoding; nothing is returned
    in that case, so no partial payload can be stored.
    """
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


def _load(frozen: Frozen, data: bytes | bytearray | memoryview) -> Any:
    """Decode bytes produced by :meth:`dumps` (with the same registrations).

    Truncated or garbage input, trailing bytes, nesting deeper than
    :data:`MAX_DEPTH` or a failing decoder raise :class:`SerializationError`;
    the underlying error, if any, is chained as ``__cause__``. Intact data
    that merely uses an ext code not registered here raises one too, whose
    message names the code and how to register it: that entry is not
    corrupt, and the pipeline keeps it.
    """
    try:
        return msgpack.unpackb(data, ext_hook=frozen.ext_hook, strict_map_key=False, raw=False)
    except UnknownNameError as exc:
        if well_formed(bytes(data)):
            raise _UnregisteredTypeError(
                _unknown_name_message(exc.name), code=NAMED_CODE, type_name=exc.name
            ) from None
        raise SerializationError(
            f"cannot decode {len(data)} bytes of msgpack data: they are damaged; the entry "
            "is corrupt"
        ) from exc
    except UnknownCodeError as exc:
        if well_formed(bytes(data)):
            raise _UnregisteredTypeError(_unregistered_message(exc.code), code=exc.code) from None
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
