"""Cache keys: canonical argument encoding, function identity and ``KeyGen``.

A cache key is ``cache_key(identity, version, input_id)`` where

- ``identity`` is :func:`function_identity` (``module.qualname`` or ``name=``),
- ``input_id`` is :meth:`ArgumentKeyer.input_id`: the call's arguments bound
  to the signature with defaults applied, encoded by :func:`canonical_bytes`
  and hashed (or the hash of what a custom ``input_key_fn`` returned).

Everything here is pure, synchronous and free of I/O except the two file
helpers of :class:`KeyGen`, which the pipeline runs in a worker thread
(:attr:`ArgumentKeyer.blocking`). This module is the public face of three
private ones: ``_canonical`` (the encoding below), ``_identity`` (function
identity) and ``_keygen`` (the key builders).

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

import types

from ._canonical import canonical_bytes
from ._identity import function_identity
from ._identity import underlying_function as underlying_function  # for the Spot; not public
from ._keygen import ArgumentKeyer, KeyGen, KeyPolicy, KeyScope, cache_key

__all__ = [
    "ArgumentKeyer",
    "KeyGen",
    "KeyPolicy",
    "KeyScope",
    "cache_key",
    "canonical_bytes",
    "function_identity",
]

# Public objects report their public path (reprs, docs, and the name under
# which a KeyGen helper passed as an argument value is keyed).
for _obj in (ArgumentKeyer, KeyGen, KeyPolicy, KeyScope, cache_key, canonical_bytes,
             function_identity):  # fmt: skip
    _obj.__module__ = __name__
    for _member in vars(_obj).values() if isinstance(_obj, type) else ():
        _function = getattr(_member, "__func__", _member)
        if isinstance(_function, types.FunctionType):
            _function.__module__ = __name__
del _obj, _member, _function
