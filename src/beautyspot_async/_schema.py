# Over 500 lines: the class nodes are small; they and the compiler picking them read together.
"""Type annotations as schemas: typed values to plain data and back.

Pure and synchronous; knows nothing of msgpack. A marked function's return
annotation (``-> Model``, ``-> list[Model]``, ``-> dict[str, Point] | None``)
is compiled once into a tree of :class:`Node` objects. ``node.dump(value)``
turns the typed parts of a result into plain data (dicts, lists, scalars)
that the serializer stores as ordinary msgpack; ``node.load(data)`` rebuilds
the same classes from that data. Only the positions the annotation pins to
one class are converted: there the class is implied by the position, so the
stored data needs no type name and reads as plain JSON-like data anywhere.
Positions that could hold several classes (``A | B``, ``set[Frozen]``,
``Any``) are left to the serializer, which names each value's class; every
class met while compiling is collected in :attr:`Compiled.scope`, the only
classes such names may resolve to. Nothing here imports a module named by
data.

Instances are rebuilt without running ``__init__`` or validators (like
``pickle`` and ``model_construct``): the data was valid when it was stored,
re-validating costs time, and a validator with side effects must not run
because of a cache hit.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections import abc
from collections.abc import Callable, Mapping
from typing import Any, Final, ForwardRef

from .exceptions import SerializationError

__all__ = [
    "ANY",
    "ClassNode",
    "Compiled",
    "Node",
    "class_node",
    "compile_annotation",
    "is_structured",
    "type_name",
]

_MISSING: Final[Any] = object()
_NONE_TYPE: Final = type(None)


def type_name(cls: type) -> str:
    """The stable default name of a class in stored data: ``module.qualname``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class SchemaMismatch(SerializationError):
    """Stored data does not fit the annotation any more (the code changed).

    Treated like any undecodable entry: the function runs again and the
    entry is overwritten.
    """


class Node:
    """A position in an annotation; this base one converts nothing."""

    __slots__ = ()

    #: Whether dump/load do anything; containers of non-converting nodes
    #: collapse to :data:`ANY` so plain results pay nothing.
    converts: bool = False

    def dump(self, value: Any) -> Any:
        return value

    def load(self, data: Any) -> Any:
        return data


ANY: Final = Node()


# -- containers ----------------------------------------------------------------------------


class _Sequence(Node):
    """``list[X]``, ``tuple[X, ...]``, ``Sequence[X]``: the runtime container type is kept."""

    __slots__ = ("item",)
    converts = True

    def __init__(self, item: Node) -> None:
        self.item = item

    def dump(self, value: Any) -> Any:
        cls = type(value)
        if cls is list:
            dump = self.item.dump
            return [dump(v) for v in value]
        if cls is tuple:
            dump = self.item.dump
            return tuple([dump(v) for v in value])
        # Anything else (None, a set of frozen models...) is left to the
        # serializer, which names typed items itself.
        return value

    def load(self, data: Any) -> Any:
        cls = type(data)
        if cls is list:
            load = self.item.load
            return [load(v) for v in data]
        if cls is tuple:
            load = self.item.load
            return tuple([load(v) for v in data])
        return data


class _FixedTuple(Node):
    """``tuple[A, B, C]``: each item by its own position."""

    __slots__ = ("items",)
    converts = True

    def __init__(self, items: tuple[Node, ...]) -> None:
        self.items = items

    def dump(self, value: Any) -> Any:
        if type(value) is not tuple or len(value) != len(self.items):
            return value
        return tuple([n.dump(v) for n, v in zip(self.items, value, strict=True)])

    def load(self, data: Any) -> Any:
        if type(data) is not tuple or len(data) != len(self.items):
            return data
        return tuple([n.load(v) for n, v in zip(self.items, data, strict=True)])


class _Mapping(Node):
    """``dict[K, V]``: keys and values by their own positions."""

    __slots__ = ("key", "value")
    converts = True

    def __init__(self, key: Node, value: Node) -> None:
        self.key = key
        self.value = value

    def dump(self, value: Any) -> Any:
        if type(value) is not dict:
            return value
        k, v = self.key.dump, self.value.dump
        return {k(a): v(b) for a, b in value.items()}

    def load(self, data: Any) -> Any:
        if type(data) is not dict:
            return data
        k, v = self.key.load, self.value.load
        return {k(a): v(b) for a, b in data.items()}


class _Stream(Node):
    """A recorded stream ``{"items": [...], "offsets": [...]}``: each item by the item type."""

    __slots__ = ("item",)
    converts = True

    def __init__(self, item: Node) -> None:
        self.item = item

    def dump(self, value: Any) -> Any:
        if type(value) is not dict or type(value.get("items")) is not list:
            return value
        dump = self.item.dump
        return {**value, "items": [dump(v) for v in value["items"]]}

    def load(self, data: Any) -> Any:
        if type(data) is not dict or type(data.get("items")) is not list:
            return data
        load = self.item.load
        data["items"] = [load(v) for v in data["items"]]
        return data


_STREAMS: Final = frozenset(
    {
        abc.AsyncIterator,
        abc.AsyncGenerator,
        abc.AsyncIterable,
        abc.Iterator,
        abc.Generator,
        abc.Iterable,
    }
)


# -- classes -----------------------------------------------------------------------------------


class ClassNode(Node):
    """A position holding exactly one class; subclasses say how its instances look as data."""

    __slots__ = ("cls", "name")
    converts = True

    def __init__(self, cls: type) -> None:
        # Any, not type: the subclasses read model_fields, _make... off it.
        self.cls: Any = cls
        self.name = type_name(cls)

    def complete(self, build: Callable[[Any], Node], hints: Mapping[str, Any]) -> None:
        """Compile the field nodes (after registration in the memo, for recursive types)."""

    def field_hints(self) -> Mapping[str, Any]:
        return {}

    def mismatch(self, value: Any) -> Any:
        """Answer for a value that is not exactly an instance of ``cls``."""
        if value is None:
            return None
        if isinstance(value, self.cls):
            # A subclass: the annotation covers only the class itself. The
            # serializer encodes it under its own registered name, or raises
            # the error that says to register it.
            return value
        raise SerializationError(
            f"the result holds a {type_name(type(value))} where the return annotation says "
            f"{self.name}; a cache hit would come back as {self.cls.__qualname__}. Return a "
            f"{self.cls.__qualname__}, or make the annotation say what is returned "
            f"(e.g. {self.cls.__qualname__} | {type(value).__qualname__})"
        )

    def unfit(self, data: Any, why: str) -> SchemaMismatch:
        return SchemaMismatch(
            f"stored data does not fit {self.name} any more ({why}): the class changed since "
            "the entry was stored; it is recomputed. Bump version= to make that explicit"
        )

    def load(self, data: Any) -> Any:
        if type(data) is dict:
            return self.build(data)
        if data is None or isinstance(data, self.cls):
            return data
        raise self.unfit(data, f"found a {type(data).__name__}")

    def build(self, data: dict[Any, Any]) -> Any:
        raise NotImplementedError


class _Fields:
    """The compiled fields of a record-like class: name -> node, defaults."""

    __slots__ = ("converting", "names", "nodes", "required")

    def __init__(self, nodes: dict[str, Node], required: frozenset[str]) -> None:
        self.nodes = nodes
        self.names = frozenset(nodes)
        self.required = required
        self.converting = {n: node for n, node in nodes.items() if node.converts}

    def dump(self, values: Mapping[str, Any], names: Any) -> dict[str, Any]:
        converting = self.converting
        out: dict[str, Any] = {}
        for name in names:
            value = values[name]
            node = converting.get(name)
            out[name] = value if node is None else node.dump(value)
        return out

    def load(self, data: dict[Any, Any]) -> dict[str, Any]:
        """Convert the typed fields of freshly decoded ``data``, in place (nobody else holds it)."""
        for name, node in self.converting.items():
            if name in data:
                data[name] = node.load(data[name])
        return data


class _Model(ClassNode):
    """A pydantic v2 model: its set fields (and extras) as a dict."""

    __slots__ = ("allow_extra", "computed", "defaults", "direct", "fields", "order", "template")

    def field_hints(self) -> Mapping[str, Any]:
        return {name: f.annotation for name, f in self.cls.model_fields.items()}

    def complete(self, build: Callable[[Any], Node], hints: Mapping[str, Any]) -> None:
        cls = self.cls
        model_fields = cls.model_fields
        nodes = {name: build(hints.get(name, Any)) for name in model_fields}
        self.fields = _Fields(
            nodes, frozenset(n for n, f in model_fields.items() if f.is_required())
        )
        self.order = tuple(model_fields)
        # A field left unset that still holds its static default is not
        # stored: rebuilding gives it the same default and leaves it unset,
        # so model_dump(exclude_unset=True) and the SDKs' to_dict() agree.
        self.defaults = {
            name: f.default
            for name, f in model_fields.items()
            if not f.is_required() and f.default_factory is None
        }
        self.allow_extra = cls.model_config.get("extra") == "allow"
        # Every field in order, with its default where that default is an
        # immutable constant: merging the stored values over it fills in
        # the fields that were not stored. Defaults pydantic must copy or
        # call are left to it.
        self.template = {
            name: self.defaults[name] if _constant_default(self.defaults, name) else _MISSING
            for name in model_fields
        }
        self.computed = frozenset(
            name
            for name, f in model_fields.items()
            if not f.is_required() and self.template[name] is _MISSING
        )
        # model_construct is pure Python and walks aliases for every field:
        # most of a typed hit. Models with nothing for it to do beyond
        # filling __dict__ (no private attributes, no model_post_init, not a
        # RootModel) are filled here directly, the way it does.
        self.direct = (
            not getattr(cls, "__pydantic_root_model__", False)
            and not cls.__private_attributes__
            and cls.__pydantic_post_init__ is None
        )

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            return self.mismatch(value)
        values = value.__dict__
        fields_set = value.__pydantic_fields_set__
        defaults = self.defaults
        names = [n for n in self.order if n in fields_set or _differs(values, n, defaults)]
        out = self.fields.dump(values, names)
        extra = value.__pydantic_extra__
        if extra:
            out.update(extra)
        return out

    def build(self, data: dict[Any, Any]) -> Any:
        fields = self.fields
        keys = data.keys()
        fields_set = set(keys)
        if len(fields_set) == len(self.order) and self.direct and fields_set <= fields.names:
            # The common case, every field stored and no extras: nothing to check or fill.
            return self._new(fields.load(data), fields_set, None)
        if not fields.required <= fields_set:
            missing = ", ".join(sorted(fields.required - fields_set))
            raise self.unfit(data, f"no value for required field(s) {missing}")
        values = fields.load(data)
        extra: dict[str, Any] | None = None
        if not fields_set <= fields.names:
            if not self.allow_extra:
                unknown = ", ".join(sorted(map(str, fields_set - fields.names)))
                raise self.unfit(data, f"unknown field(s) {unknown}")
            names = fields.names
            extra = {k: v for k, v in values.items() if k not in names}
            values = {k: v for k, v in values.items() if k in names}
        if not self.direct or (len(values) != len(self.order) and not self.computed <= fields_set):
            return self.cls.model_construct(_fields_set=fields_set, **values, **(extra or {}))
        if len(values) != len(self.order):
            values = self.template | values
        return self._new(values, fields_set, extra)

    def _new(self, values: dict[str, Any], fields_set: set[str], extra: Any) -> Any:
        # BaseModel has no __new__ of its own; its __setattr__ would validate.
        obj = _object_new(self.cls)
        _set = _object_setattr
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", fields_set)
        _set(obj, "__pydantic_extra__", (extra or {}) if self.allow_extra else None)
        _set(obj, "__pydantic_private__", None)
        return obj


_object_new: Final = object.__new__
_object_setattr: Final = object.__setattr__

_IMMUTABLE: Final = frozenset({type(None), bool, int, float, str, bytes, complex})


def _constant_default(defaults: Mapping[str, Any], name: str) -> bool:
    """Whether the default of ``name`` can be shared by every instance as it is."""
    if name not in defaults:
        return False
    default = defaults[name]
    return type(default) in _IMMUTABLE or isinstance(default, enum.Enum)


def _differs(values: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> bool:
    default = defaults.get(name, _MISSING)
    if default is _MISSING:
        return True
    value = values.get(name, _MISSING)
    if value is default:
        return False
    try:
        return bool(value != default)
    except Exception:  # an array-like whose truth is ambiguous: keep it
        return True


class _Dataclass(ClassNode):
    """A dataclass: every field as a dict; rebuilt without ``__init__``."""

    __slots__ = ("defaults", "fields", "has_dict")

    def field_hints(self) -> Mapping[str, Any]:
        return {f.name: f.type for f in dataclasses.fields(self.cls)}

    def complete(self, build: Callable[[Any], Node], hints: Mapping[str, Any]) -> None:
        fields = dataclasses.fields(self.cls)
        nodes = {f.name: build(hints.get(f.name, Any)) for f in fields}
        self.defaults: dict[str, Callable[[], Any]] = {}
        required = set()
        for f in fields:
            if f.default is not dataclasses.MISSING:
                self.defaults[f.name] = _constant(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                self.defaults[f.name] = f.default_factory
            else:
                required.add(f.name)
        self.fields = _Fields(nodes, frozenset(required))
        self.has_dict = "__slots__" not in self.cls.__dict__

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            return self.mismatch(value)
        fields = self.fields
        if self.has_dict:
            return fields.dump(value.__dict__, fields.nodes)
        return fields.dump({n: getattr(value, n) for n in fields.nodes}, fields.nodes)

    def build(self, data: dict[Any, Any]) -> Any:
        fields = self.fields
        if not data.keys() <= fields.names:
            unknown = ", ".join(sorted(map(str, data.keys() - fields.names)))
            raise self.unfit(data, f"unknown field(s) {unknown}")
        values = fields.load(data)
        if len(values) != len(fields.names):
            if not fields.required <= values.keys():
                missing = ", ".join(sorted(fields.required - values.keys()))
                raise self.unfit(data, f"no value for required field(s) {missing}")
            values = dict(values)
            for name, make in self.defaults.items():
                if name not in values:
                    values[name] = make()
        cls: Any = self.cls
        obj = cls.__new__(cls)
        if self.has_dict:
            obj.__dict__.update(values)
        else:
            for name, value in values.items():
                object.__setattr__(obj, name, value)
        return obj


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class _NamedTuple(ClassNode):
    """A ``NamedTuple`` (or ``namedtuple``): its items as a list."""

    __slots__ = ("items",)

    def field_hints(self) -> Mapping[str, Any]:
        return getattr(self.cls, "__annotations__", {})

    def complete(self, build: Callable[[Any], Node], hints: Mapping[str, Any]) -> None:
        self.items = tuple(build(hints.get(name, Any)) for name in self.cls._fields)

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            return self.mismatch(value)
        return [n.dump(v) for n, v in zip(self.items, value, strict=True)]

    def load(self, data: Any) -> Any:
        if type(data) is list:
            if len(data) != len(self.items):
                raise self.unfit(data, f"{len(data)} items for {len(self.items)} fields")
            items = [n.load(v) for n, v in zip(self.items, data, strict=True)]
            return self.cls._make(items)
        if data is None or isinstance(data, self.cls):
            return data
        raise self.unfit(data, f"found a {type(data).__name__}")


class _Enum(ClassNode):
    """An ``Enum`` member: its value."""

    __slots__ = ()

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            return self.mismatch(value)
        return value.value

    def load(self, data: Any) -> Any:
        if type(data) is self.cls or data is None:
            return data
        try:
            return self.cls(data)
        except (ValueError, TypeError):
            raise self.unfit(data, f"{data!r} is not a value of it") from None


class _TypedDict(ClassNode):
    """A ``TypedDict``: a plain dict whose known keys are converted."""

    __slots__ = ("fields",)

    def field_hints(self) -> Mapping[str, Any]:
        return getattr(self.cls, "__annotations__", {})

    def complete(self, build: Callable[[Any], Node], hints: Mapping[str, Any]) -> None:
        nodes = {name: build(tp) for name, tp in hints.items()}
        self.fields = _Fields(nodes, frozenset())

    def dump(self, value: Any) -> Any:
        if type(value) is not dict:
            return value
        converting = self.fields.converting
        return {k: (v if (n := converting.get(k)) is None else n.dump(v)) for k, v in value.items()}

    def load(self, data: Any) -> Any:
        if type(data) is not dict:
            return data
        return self.fields.load(data)


def _kind(cls: type) -> type[ClassNode] | None:
    if cls.__module__ in _FRAMEWORK_MODULES:
        return None  # Enum, BaseModel, RootModel...: bases, never a value's own class
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return _Enum
    if typing.is_typeddict(cls):
        return _TypedDict
    if dataclasses.is_dataclass(cls):
        return _Dataclass
    if issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make"):
        return _NamedTuple
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(cls, pydantic.BaseModel):
        return _Model
    return None


_FRAMEWORK_MODULES: Final = frozenset(
    {"enum", "typing", "builtins", "pydantic.main", "pydantic.root_model"}
)


def is_structured(cls: Any) -> bool:
    """Whether instances of ``cls`` can be stored as data with no encoder of their own."""
    return isinstance(cls, type) and _kind(cls) is not None


# -- compiling annotations -----------------------------------------------------------------------

_SEQUENCES: Final = frozenset(
    {list, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable, typing.Sequence}
)
_MAPPINGS: Final = frozenset({dict, abc.Mapping, abc.MutableMapping})
_SETS: Final = frozenset({set, frozenset, abc.Set, abc.MutableSet})
_WRAPPERS: Final = frozenset({typing.ClassVar, typing.Final, typing.Required, typing.NotRequired})


class Compiled:
    """One compiled annotation: its root node and every class it can reach."""

    __slots__ = ("complete", "root", "scope")

    def __init__(self, root: Node, scope: dict[str, ClassNode], complete: bool = True) -> None:
        self.root = root
        self.scope = scope
        #: Whether every annotation it met resolved (a later try may do better).
        self.complete = complete


class _Compiler:
    def __init__(self, globalns: Mapping[str, Any] | None, localns: Mapping[str, Any] | None):
        self.globalns = dict(globalns or {})
        self.localns = dict(localns or {})
        self.memo: dict[Any, ClassNode] = {}
        #: False once a field annotation could not be resolved.
        self.complete = True
        #: The type variables of the generic class being compiled, bound.
        self.typevars: dict[Any, Any] = {}
        self.scope: dict[str, ClassNode] = {}

    def build(self, tp: Any, globalns: Mapping[str, Any] | None = None) -> Node:
        if isinstance(tp, str):
            tp = ForwardRef(tp)
        if isinstance(tp, ForwardRef):
            tp = self.resolve(tp, globalns)
        if isinstance(tp, typing.TypeVar):
            bound = self.typevars.get(tp)
            return ANY if bound is None else self.build(bound, globalns)
        if tp is None or tp is _NONE_TYPE or tp is Any:
            return ANY
        supertype = getattr(tp, "__supertype__", None)  # NewType
        if supertype is not None:
            return self.build(supertype, globalns)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated or origin in _WRAPPERS:
            return self.build(args[0], globalns) if args else ANY
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args, globalns)
        if origin is typing.Literal:
            return ANY
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self._seq(self.build(args[0], globalns))
            nodes = tuple(self.build(a, globalns) for a in args if a != ())
            return _FixedTuple(nodes) if any(n.converts for n in nodes) else ANY
        if origin in _SEQUENCES:
            return self._seq(self.build(args[0], globalns) if args else ANY)
        if origin in _MAPPINGS:
            if len(args) != 2:
                return ANY
            key = self.build(args[0], globalns)
            # Typed keys other than enum members would turn into unhashable
            # dicts: the serializer names them instead.
            if key.converts and not isinstance(key, _Enum):
                key = ANY
            value = self.build(args[1], globalns)
            return _Mapping(key, value) if key.converts or value.converts else ANY
        if origin in _SETS:
            # Typed set members would become unhashable dicts; reaching them
            # adds their classes to the scope, where the serializer names them.
            for a in args:
                self.build(a, globalns)
            return ANY
        if isinstance(origin, type) and _kind(origin) is not None:
            # A parametrized generic class (Box[Item]): the class, with its
            # type variables bound to the arguments (in the current binding).
            params = getattr(origin, "__parameters__", ())
            bound = tuple(
                self.typevars.get(a, a) if isinstance(a, typing.TypeVar) else a for a in args
            )
            return self._class(origin, dict(zip(params, bound, strict=False)))
        if origin is not None:
            return ANY
        if isinstance(tp, type):
            return self._class(tp)
        return ANY

    def resolve(self, ref: ForwardRef, globalns: Mapping[str, Any] | None) -> Any:
        glob = dict(self.globalns)
        if globalns is not None:
            glob.update(globalns)
        return typing._eval_type(ref, glob, self.localns)  # type: ignore[attr-defined]

    def _seq(self, item: Node) -> Node:
        return _Sequence(item) if item.converts else ANY

    def _union(self, args: tuple[Any, ...], globalns: Mapping[str, Any] | None) -> Node:
        branches = [self.build(a, globalns) for a in args if a is not _NONE_TYPE and a is not None]
        converting = [b for b in branches if b.converts]
        if len(branches) == 1 and converting:
            return converting[0]  # X | None: every node passes None through
        # Several possible shapes: the data alone could not tell them apart,
        # so the serializer stores each typed value under its class name.
        return ANY

    def _class(self, cls: type, typevars: Mapping[Any, Any] | None = None) -> Node:
        memo_key = (cls, tuple(typevars.items())) if typevars else cls
        node = self.memo.get(memo_key)
        if node is not None:
            return node
        kind = _kind(cls)
        if kind is None:
            return ANY
        node = kind(cls)
        self.memo[memo_key] = node
        self.scope.setdefault(node.name, node)
        globalns = _module_globals(cls)

        def build_field(tp: Any) -> Node:
            outer, self.typevars = self.typevars, dict(typevars or {})
            try:
                return self.build(tp, globalns)
            except Exception:
                # A field annotation that cannot be resolved here converts
                # nothing; typed values in it are then named by the serializer.
                self.complete = False
                return ANY
            finally:
                self.typevars = outer

        node.complete(build_field, self._hints(node))
        return node

    def _hints(self, node: ClassNode) -> Mapping[str, Any]:
        cls = node.cls
        if isinstance(node, _Model | _Enum):
            return node.field_hints()
        try:
            return typing.get_type_hints(cls, localns=self.localns)
        except Exception:
            # Left as strings, each is resolved (or fails) on its own below.
            return node.field_hints()


def _module_globals(cls: type) -> Mapping[str, Any] | None:
    module = sys.modules.get(cls.__module__)
    return vars(module) if module is not None else None


def compile_annotation(
    annotation: Any,
    globalns: Mapping[str, Any] | None = None,
    localns: Mapping[str, Any] | None = None,
    *,
    stream: bool = False,
) -> Compiled:
    """Compile ``annotation``; raises NameError (or another error) if it cannot be resolved.

    ``stream``: the annotation of a generator function (``AsyncIterator[Chunk]``):
    the schema is that of its recorded stream, each item by the item type.
    """
    compiler = _Compiler(globalns, localns)
    if stream:
        tp = annotation
        if isinstance(tp, str):
            tp = compiler.resolve(ForwardRef(tp), None)
        args = typing.get_args(tp) if typing.get_origin(tp) in _STREAMS else ()
        item = compiler.build(args[0]) if args else ANY
        root: Node = _Stream(item) if item.converts else ANY
    else:
        root = compiler.build(annotation)
    return Compiled(root, compiler.scope, compiler.complete)


def class_node(cls: type) -> ClassNode | None:
    """The node of one structured class (for registration by class), or None."""
    if _kind(cls) is None:
        return None
    node = _Compiler(_module_globals(cls), None)._class(cls)
    assert isinstance(node, ClassNode)
    return node
