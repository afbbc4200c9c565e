"""Key builders: the cache key of a call, from identity, version and arguments.

``cache_key(identity, version, input_id)`` (or a :class:`KeyScope` framed once
per function) hashes the three parts; :class:`ArgumentKeyer` derives the
``input_id`` of each call, binding the arguments to the signature and encoding
them canonically (``_canonical``); :class:`KeyGen` and :class:`KeyPolicy` are
the ready-made ``input_key_fn`` values. Pure and synchronous, except the two
file helpers of :class:`KeyGen`, which the pipeline runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ._canonical import (
    NONE,
    Unkeyable,
    encode,
    encode_int,
    encode_str,
    frame,
    hexdigest,
    pack_len,
    type_label,
)
from ._identity import describe, unwrap
from .exceptions import ConfigurationError

__all__ = ["ArgumentKeyer", "KeyGen", "KeyPolicy", "KeyScope", "cache_key"]


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
        framed_version = NONE if version is None else encode_str(version)
        self._prefix = b"k" + encode_str(identity) + framed_version

    def __call__(self, input_id: str) -> str:
        data = input_id.encode()
        return hexdigest(self._prefix + b"s" + pack_len(len(data)) + data)


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
        target, self._pre_args, self._pre_kwargs = unwrap(fn)
        self._name = describe(fn)
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
                    self._pre_bytes = encode(self._pre_args) + encode(self._pre_kwargs)
                except Unkeyable as err:
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
            else (encode_str(p.name), policy.transforms.get(p.name), p.kind is _P.VAR_KEYWORD)
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
                    f"{describe(self._key_fn)} keys on the first argument of {self._name}, "
                    "which this call did not pass positionally"
                )
            return self._custom_id(self._key_fn(*bound.args, **bound.kwargs), b"")
        return self._encode(self._bind(args, kwargs))

    def key_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[tuple[str, Any, Any]]:
        """The call's arguments as the key sees them: ``(name, value, keyed_value)``.

        Bound to the signature with defaults applied; arguments a policy
        ignores are left out, ``**kwargs`` entries are listed by their own
        names, and ``keyed_value`` is the value after a ``KeyGen.map``
        transform. With a custom key function every bound argument is listed
        (which ones it reads is unknowable). Raises ``TypeError`` when the
        arguments do not bind.
        """
        if self._pre_args:
            args = self._pre_args + args
        if self._pre_kwargs:
            kwargs = {**self._pre_kwargs, **kwargs}
        if self._mode != "canonical":
            return [(n, v, v) for n, v in self._bind_slow(args, kwargs).arguments.items()]
        found: list[tuple[str, Any, Any]] = []
        for name, entry, value in zip(
            self._names, self._plan, self._bind(args, kwargs), strict=True
        ):
            if entry is None:
                continue
            _, transform, var_keyword = entry
            if var_keyword:
                for extra, item in value.items():
                    if extra in self._extra_ignored:
                        continue
                    mapped = self._extra_transforms.get(extra)
                    found.append((extra, item, item if mapped is None else mapped(item)))
                continue
            found.append((name, value, value if transform is None else transform(value)))
        return found

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
                append(b"s" + pack_len(len(data)) + data)
                continue
            try:
                append(encode(value))
            except Unkeyable as err:
                raise self._argument_error(prefix, err) from None
            except RecursionError:
                raise self._argument_error(prefix, None) from None
        return hexdigest(b"".join(parts))

    def _encode_extra_kwargs(self, extra: dict[str, Any]) -> bytes:
        entries = []
        for name, value in extra.items():
            if name in self._extra_ignored:
                continue
            transform = self._extra_transforms.get(name)
            if transform is not None:
                value = transform(value)
            try:
                entries.append(encode_str(name) + encode(value))
            except Unkeyable as err:
                raise self._argument_error(encode_str(name), err) from None
            except RecursionError:
                raise self._argument_error(encode_str(name), None) from None
        entries.sort()
        return frame(b"d", b"".join(entries))

    def _argument_error(self, prefix: bytes, err: Unkeyable | None) -> ConfigurationError:
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
            encoded = encode_str(result)
        elif isinstance(result, bytes):
            encoded = frame(b"b", bytes(result))
        else:
            raise ConfigurationError(
                f"input_key_fn {describe(self._key_fn)} of {self._name} returned "
                f"{type_label(type(result))}; it must return str or bytes"
            )
        return hexdigest(b"Y" + encoded + extra)


# --------------------------------------------------------------------------- KeyGen


def _rest_of_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return encode(args) + encode(kwargs)
    except Unkeyable as err:
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
        return hexdigest(
            b"ps"
            + encode(resolved)
            + encode_int(stat.st_size)
            + encode_int(stat.st_mtime_ns)
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
        return hexdigest(b"pc" + frame(b"b", content) + _rest_of_call(args, kwargs))

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
