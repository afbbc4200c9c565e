# Over 500 lines: pandas columns travel as the numpy encoding; both share the damage checks.
"""Exact encodings of numpy arrays and scalars and of pandas frames, series and indexes.

Pure and synchronous; used by :mod:`._codecs` for the reserved codes
:data:`NDARRAY_CODE` and :data:`PANDAS_CODE`. numpy and pandas are optional
here: nothing is imported until a value of theirs is met (found by its type's
module, then the already-imported module in ``sys.modules``) or a payload of
their code is decoded.

``NDARRAY_CODE`` (124) payload, *not* msgpack as a whole so that the array's
bytes are neither copied into a msgpack ``bin`` nor out of one again::

    u32 little-endian n | msgpack header (n bytes) | zero padding to 16 | raw data

header ``["a", dtype.str, shape, fortran, writeable]`` for an ndarray,
``["s", dtype.str]`` for a numpy scalar. ``dtype.str`` carries the byte order
and the datetime unit; the raw data is the array's memory in C order, or in
Fortran order when ``fortran`` is true (then no reordering copy is made).

``PANDAS_CODE`` (125) payload: msgpack ``[kind, ...]`` with kind ``"frame"``,
``"series"`` or ``"index"``; the column values inside are ndarrays (code 124)
or, for object columns, the Python values themselves, packed one by one by
the serializer.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import struct
import sys
from collections.abc import Callable
from typing import Any, Final
from zoneinfo import ZoneInfo

from .exceptions import SerializationError

__all__ = ["NDARRAY_CODE", "PANDAS_CODE", "decode", "encoder_for"]

NDARRAY_CODE: Final = 124
PANDAS_CODE: Final = 125

_Pack = Callable[[Any], bytes]
_Unpack = Callable[[bytes], Any]
_Encode = Callable[[Any, _Pack], bytes]

_HEADER_LEN: Final = struct.Struct("<I")
# Raw data starts 16-aligned inside the payload, and CPython bytes data is
# 16-aligned, so a read-only decoded view is an aligned array.
_ALIGN: Final = 16
# dtype kinds whose memory is the value: no pointers, no Python objects.
_PLAIN_KINDS: Final = frozenset("biufcmMUS")
# numpy 2 allows 64 dimensions (1.x: 32); anything above is damage.
_MAX_NDIM: Final = 64
# A dtype string longer than this is not one numpy writes (">U2147483647" is 12).
_MAX_DTYPE_STR: Final = 32
# pandas materialises a RangeIndex used as MultiIndex level or as categories,
# so a stored one is bounded by the rows it labels (plus this allowance) and a
# lying ``stop`` cannot make a reader allocate; longer ones are written out.
_SMALL_RANGE: Final = 1 << 16


def _module_is(cls: type, name: str) -> bool:
    module = getattr(cls, "__module__", None) or ""
    return module == name or module.startswith(name + ".")


def encoder_for(cls: type) -> tuple[int, _Encode] | None:
    """``(code, encode)`` for the exact numpy/pandas types encoded here, else None.

    Subclasses (masked arrays, ``np.matrix``, DataFrame subclasses) get None:
    like other built-in encodings, only the exact type round-trips, and a
    subclass can still be registered by the user.
    """
    if _module_is(cls, "numpy"):
        np = sys.modules.get("numpy")
        if np is None:
            return None
        if cls is np.ndarray:
            return NDARRAY_CODE, _encode_ndarray
        if issubclass(cls, np.generic):
            return NDARRAY_CODE, _encode_scalar
        return None
    if _module_is(cls, "pandas"):
        pd = sys.modules.get("pandas")
        if pd is None:
            return None
        if cls is pd.DataFrame:
            return PANDAS_CODE, _encode_frame
        if cls is pd.Series:
            return PANDAS_CODE, _encode_series
        if issubclass(cls, pd.Index):
            return PANDAS_CODE, _encode_index_value
    return None


def decode(code: int, data: bytes, unpack: _Unpack) -> Any:
    if code == NDARRAY_CODE:
        return _decode_numpy(data, unpack)
    if code == PANDAS_CODE:
        return _decode_pandas(data, unpack)
    raise ValueError(f"_arrays.decode got ext code {code}")


# -- numpy ---------------------------------------------------------------------


def _check_dtype(dtype: Any, what: str) -> None:
    if dtype.kind == "O":
        raise SerializationError(
            f"cannot serialize {what} of dtype object: its items are arbitrary Python objects "
            "(pickle is never used). Convert it to a supported dtype (e.g. .astype(float) or "
            ".astype(str)) or to a list with .tolist(), whose items are then encoded one by one"
        )
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise SerializationError(
            f"cannot serialize {what} of dtype {dtype}: only bool, integer, float, complex, "
            "datetime64, timedelta64 and fixed-width str (U) / bytes (S) dtypes are encoded "
            "(structured, void and variable-width string dtypes are not). Convert it to one of "
            "those (e.g. .astype(str) for StringDType, one array per field of a structured "
            "array) or to a list with .tolist()"
        )
    if dtype.itemsize == 0:
        raise SerializationError(f"cannot serialize {what} of the unsized dtype {dtype}")


def _frame_payload(header: bytes, raw: Any) -> bytes:
    start = _HEADER_LEN.size + len(header)
    pad = b"\0" * (-start % _ALIGN)
    return b"".join((_HEADER_LEN.pack(len(header)), header, pad, raw))


def _encode_ndarray(arr: Any, pack: _Pack) -> bytes:
    np = sys.modules["numpy"]
    _check_dtype(arr.dtype, "a numpy array")
    fortran = bool(arr.flags.f_contiguous and not arr.flags.c_contiguous and arr.ndim > 1)
    if not (arr.flags.c_contiguous or fortran):
        arr = np.ascontiguousarray(arr)
    # A flat uint8 *view* of the memory: datetime64 and str dtypes export no
    # buffer themselves, and bytes.join copies straight from the view, so the
    # data is copied once here (into the payload), never via tobytes().
    raw = arr.reshape(-1, order="F" if fortran else "C").view(np.uint8)
    header = pack(
        ["a", arr.dtype.str, [int(n) for n in arr.shape], fortran, bool(arr.flags.writeable)]
    )
    return _frame_payload(header, memoryview(raw))


def _encode_scalar(value: Any, pack: _Pack) -> bytes:
    np = sys.modules["numpy"]
    arr = np.asarray(value)
    _check_dtype(arr.dtype, f"a numpy scalar ({type(value).__name__})")
    return _frame_payload(pack(["s", arr.dtype.str]), memoryview(arr.reshape(-1).view(np.uint8)))


def _parse_dtype(np: Any, spec: Any) -> Any:
    if not isinstance(spec, str) or len(spec) > _MAX_DTYPE_STR:
        raise ValueError(f"bad numpy dtype in stored data: {spec!r}")
    dtype = np.dtype(spec)
    if (
        dtype.kind not in _PLAIN_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
    ):
        raise ValueError(f"numpy dtype {spec!r} is not one dumps writes")
    return dtype


def _decode_numpy(data: bytes, unpack: _Unpack) -> Any:
    try:
        import numpy as np
    except ImportError as exc:
        raise SerializationError(
            "stored data holds a numpy array or scalar, and numpy cannot be imported here: "
            "install numpy to read it"
        ) from exc
    view = memoryview(data)
    if len(view) < _HEADER_LEN.size:
        raise ValueError("truncated numpy payload")
    (n,) = _HEADER_LEN.unpack_from(view)
    start = _HEADER_LEN.size + n
    if start > len(view):
        raise ValueError("truncated numpy payload header")
    header = unpack(bytes(view[_HEADER_LEN.size : start]))
    offset = start + (-start % _ALIGN)
    nbytes = len(view) - offset
    if not isinstance(header, list) or not header:
        raise ValueError("malformed numpy payload header")
    if header[0] == "s" and len(header) == 2:
        dtype = _parse_dtype(np, header[1])
        if nbytes != dtype.itemsize:
            raise ValueError(f"numpy scalar of {dtype} with {nbytes} data bytes")
        return np.frombuffer(data, dtype=dtype, count=1, offset=offset)[0]
    if header[0] != "a" or len(header) != 5:
        raise ValueError("malformed numpy payload header")
    _, spec, shape, fortran, writeable = header
    dtype = _parse_dtype(np, spec)
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(type(d) is int and 0 <= d <= sys.maxsize for d in shape)
        or type(fortran) is not bool
        or type(writeable) is not bool
    ):
        raise ValueError("malformed numpy array header")
    # Checked in Python ints before numpy sees the shape: a lying header must
    # not make numpy allocate, and the data must be exactly the shape's worth.
    count = math.prod(shape)
    if count * dtype.itemsize != nbytes:
        raise ValueError(
            f"numpy array of shape {tuple(shape)} and dtype {dtype} needs "
            f"{count * dtype.itemsize} data bytes, the payload has {nbytes}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    arr = flat.reshape(shape, order="F" if fortran else "C")
    # frombuffer over immutable bytes is read-only: copy only when the
    # original was writable; a read-only original keeps the zero-copy view.
    if writeable and not arr.flags.writeable:
        arr = arr.copy(order="A")
    return arr


# -- pandas --------------------------------------------------------------------


def _unsupported(what: str, dtype: Any) -> SerializationError:
    return SerializationError(
        f"cannot serialize a pandas {what} of dtype {dtype}: supported are numpy dtypes "
        "(not object arrays of unsupported values), datetime64 with a timezone, categorical, "
        "nullable Int/UInt/Float/boolean and string dtypes. Convert it first, e.g. "
        ".astype(str) or .astype(object) with plain Python values"
    )


def _encode_tz(tz: Any) -> list[Any]:
    if isinstance(tz, ZoneInfo):
        return ["zoneinfo", tz.key]
    if tz is _dt.UTC:
        return ["utc"]
    if type(tz) is _dt.timezone:
        offset = tz.utcoffset(None)
        own = tz.tzname(None)
        # Only a name the user chose is kept; the default one is derived again.
        name = None if own == _dt.timezone(offset).tzname(None) else own
        return ["fixed", offset // _dt.timedelta(microseconds=1), name]
    if _module_is(type(tz), "pytz"):
        zone = getattr(tz, "zone", None)
        if isinstance(zone, str):
            return ["pytz", zone]
    raise SerializationError(
        f"cannot serialize pandas datetimes in the timezone {tz!r} ({type(tz).__qualname__}): "
        "use a zoneinfo.ZoneInfo zone (e.g. .dt.tz_convert('Europe/Paris') on pandas 3, or "
        "tz_convert(zoneinfo.ZoneInfo(...))), a fixed datetime.timezone or UTC"
    )


def _decode_tz(raw: Any) -> Any:
    kind = raw[0]
    if kind == "utc":
        return _dt.UTC
    if kind == "zoneinfo":
        return ZoneInfo(raw[1])
    if kind == "fixed":
        offset = _dt.timedelta(microseconds=raw[1])
        return _dt.timezone(offset) if raw[2] is None else _dt.timezone(offset, raw[2])
    if kind == "pytz":
        # pytz zones come from pandas < 3; pytz is imported by name so that
        # type checking does not depend on whether it is installed.
        try:
            pytz = importlib.import_module("pytz")
        except ImportError:
            return ZoneInfo(raw[1])
        return pytz.timezone(raw[1])
    raise ValueError(f"unknown timezone kind {kind!r}")


def _encode_values(obj: Any, what: str) -> list[Any]:
    """The dtype and values of a Series or Index (not its name or index)."""
    np = sys.modules["numpy"]
    pd = sys.modules["pandas"]
    dtype = obj.dtype
    if isinstance(dtype, np.dtype):
        values = obj.to_numpy()
        if dtype.kind == "O":
            # Items go through the serializer's own packing: str, None, dates...
            return ["object", values.tolist()]
        try:
            _check_dtype(dtype, f"a pandas {what}")
        except SerializationError:
            raise _unsupported(what, dtype) from None
        return ["numpy", values]
    array = obj.array
    if isinstance(dtype, pd.DatetimeTZDtype):
        naive_utc = pd.DatetimeIndex(array).tz_convert(None).to_numpy()
        return ["datetimetz", _encode_tz(dtype.tz), naive_utc]
    if isinstance(dtype, pd.CategoricalDtype):
        return [
            "categorical",
            _encode_index(array.categories, _range_limit(len(array))),
            bool(array.ordered),
            np.asarray(array.codes),
        ]
    if isinstance(array, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray):
        numpy_dtype = dtype.numpy_dtype
        data = array.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0))
        return ["masked", data, np.asarray(array.isna(), dtype=bool)]
    if isinstance(dtype, pd.StringDtype):
        na_is_nan = getattr(dtype, "na_value", pd.NA) is not pd.NA
        items = array.to_numpy(dtype=object, na_value=None).tolist()
        return ["string", dtype.storage, na_is_nan, items]
    raise _unsupported(what, dtype)


def _writable(np: Any, arr: Any) -> Any:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"expected a numpy array in a pandas payload, got {type(arr).__name__}")
    # pandas may write into its blocks in place; never hand it a read-only view.
    return arr if arr.flags.writeable else arr.copy()


def _string_dtype(pd: Any, storage: str, na_is_nan: bool) -> Any:
    np = sys.modules["numpy"]
    if not na_is_nan:
        return pd.StringDtype(storage)
    try:
        return pd.StringDtype(storage, na_value=np.nan)
    except TypeError:  # pandas < 2.3 spells the NaN variant as a storage
        return pd.StringDtype("pyarrow_numpy")


def _decode_values(np: Any, pd: Any, raw: Any) -> tuple[Any, Any]:
    """``(values, dtype)`` to construct a Series or Index with, exactly."""
    kind = raw[0]
    if kind == "numpy":
        arr = _writable(np, raw[1])
        if arr.ndim != 1:
            raise ValueError("pandas column values must be one-dimensional")
        return arr, arr.dtype
    if kind == "object":
        items = raw[1]
        if not isinstance(items, list):
            raise ValueError("object column values must be a list")
        return np.fromiter(items, dtype=object, count=len(items)), np.dtype(object)
    if kind == "datetimetz":
        tz = _decode_tz(raw[1])
        utc = pd.DatetimeIndex(_writable(np, raw[2])).tz_localize("UTC")
        values = utc.tz_convert(tz).array
        return values, values.dtype
    if kind == "categorical":
        codes = _writable(np, raw[3])
        categories = _decode_index(np, pd, raw[1], _range_limit(len(codes)))
        dtype = pd.CategoricalDtype(categories, ordered=bool(raw[2]))
        return pd.Categorical.from_codes(codes, dtype=dtype), dtype
    if kind == "masked":
        data, mask = _writable(np, raw[1]), _writable(np, raw[2])
        if mask.dtype != np.dtype(bool):
            raise ValueError("a nullable column's mask must be bool")
        if data.dtype.kind == "b":
            array = pd.arrays.BooleanArray(data, mask)
        elif data.dtype.kind in "iu":
            array = pd.arrays.IntegerArray(data, mask)
        elif data.dtype.kind == "f":
            array = pd.arrays.FloatingArray(data, mask)
        else:
            raise ValueError(f"no nullable pandas dtype over {data.dtype}")
        return array, array.dtype
    if kind == "string":
        _, storage, na_is_nan, items = raw
        if not isinstance(items, list) or not all(v is None or type(v) is str for v in items):
            raise ValueError("string column values must be a list of str or None")
        try:
            dtype = _string_dtype(pd, storage, bool(na_is_nan))
            return pd.array(items, dtype=dtype), dtype
        except ImportError:
            # Written with pyarrow storage, read without pyarrow: same values.
            dtype = _string_dtype(pd, "python", bool(na_is_nan))
            return pd.array(items, dtype=dtype), dtype
    raise ValueError(f"unknown pandas values kind {kind!r}")


def _range_limit(count: int) -> int:
    return max(count, _SMALL_RANGE)


def _encode_index(index: Any, range_limit: int | None = None) -> list[Any]:
    pd = sys.modules["pandas"]
    np = sys.modules["numpy"]
    if type(index) is pd.RangeIndex and (range_limit is None or len(index) <= range_limit):
        return ["range", index.start, index.stop, index.step, index.name]
    if isinstance(index, pd.MultiIndex):
        limit = _range_limit(len(index))
        return [
            "multi",
            [_encode_index(level, limit) for level in index.levels],
            [np.asarray(codes) for codes in index.codes],
            list(index.names),
        ]
    freq = getattr(index, "freq", None)
    return [
        "index",
        _encode_values(index, "index"),
        index.name,
        None if freq is None else freq.freqstr,
    ]


def _decode_index(np: Any, pd: Any, raw: Any, range_limit: int | None = None) -> Any:
    kind = raw[0]
    if kind == "range":
        _, start, stop, step, name = raw
        if not all(type(v) is int for v in (start, stop, step)):
            raise ValueError("RangeIndex bounds must be ints")
        index = pd.RangeIndex(start, stop, step, name=name)
        if range_limit is not None and len(index) > range_limit:
            raise ValueError(f"a RangeIndex level of {len(index)} values for {range_limit} rows")
        return index
    if kind == "multi":
        _, levels, codes, names = raw
        codes = [_writable(np, c) for c in codes]
        limit = _range_limit(max((len(c) for c in codes), default=0))
        return pd.MultiIndex(
            levels=[_decode_index(np, pd, level, limit) for level in levels],
            codes=codes,
            names=names,
            verify_integrity=True,
        )
    if kind == "index":
        _, values_raw, name, freq = raw
        values, dtype = _decode_values(np, pd, values_raw)
        index = pd.Index(values, dtype=dtype, name=name, copy=False)
        if freq is not None:
            if isinstance(index, pd.DatetimeIndex):
                index = pd.DatetimeIndex(index, freq=freq)
            elif isinstance(index, pd.TimedeltaIndex):
                index = pd.TimedeltaIndex(index, freq=freq)
            else:
                raise ValueError(f"a freq on a {type(index).__name__}")
        return index
    raise ValueError(f"unknown pandas index kind {kind!r}")


def _encode_frame(df: Any, pack: _Pack) -> bytes:
    columns = []
    for i in range(df.shape[1]):
        column = df.iloc[:, i]
        columns.append(_encode_values(column, f"DataFrame column {df.columns[i]!r}"))
    payload = [
        "frame",
        _encode_index(df.columns),
        _encode_index(df.index),
        columns,
        dict(df.attrs),
    ]
    return pack(payload)


def _encode_series(series: Any, pack: _Pack) -> bytes:
    payload = [
        "series",
        _encode_index(series.index),
        _encode_values(series, f"Series {series.name!r}"),
        series.name,
        dict(series.attrs),
    ]
    return pack(payload)


def _encode_index_value(index: Any, pack: _Pack) -> bytes:
    return pack(["index", _encode_index(index)])


def _decode_pandas(data: bytes, unpack: _Unpack) -> Any:
    try:
        import numpy as np
        import pandas as pd
    except ImportError as exc:
        raise SerializationError(
            "stored data holds a pandas DataFrame, Series or Index, and pandas cannot be "
            "imported here: install pandas to read it"
        ) from exc
    raw = unpack(data)
    if not isinstance(raw, list) or not raw:
        raise ValueError("malformed pandas payload")
    kind = raw[0]
    if kind == "index" and len(raw) == 2:
        return _decode_index(np, pd, raw[1])
    if kind == "series" and len(raw) == 5:
        _, index_raw, values_raw, name, attrs = raw
        index = _decode_index(np, pd, index_raw)
        values, dtype = _decode_values(np, pd, values_raw)
        if len(values) != len(index):
            raise ValueError(f"a Series of {len(values)} values on an index of {len(index)}")
        series = pd.Series(values, index=index, dtype=dtype, name=name, copy=False)
        series.attrs.update(_attrs(attrs))
        return series
    if kind == "frame" and len(raw) == 5:
        _, columns_raw, index_raw, columns_values, attrs = raw
        columns = _decode_index(np, pd, columns_raw)
        index = _decode_index(np, pd, index_raw)
        if not isinstance(columns_values, list) or len(columns_values) != len(columns):
            raise ValueError("a DataFrame payload with a wrong number of columns")
        data_by_position = {}
        for i, values_raw in enumerate(columns_values):
            values, dtype = _decode_values(np, pd, values_raw)
            if len(values) != len(index):
                raise ValueError(f"a column of {len(values)} values on an index of {len(index)}")
            # Positions, not labels, as keys: labels may repeat. Each column
            # is a Series of its own so that no dtype is inferred again
            # (pandas 3 would turn object str columns into str ones).
            data_by_position[i] = pd.Series(values, dtype=dtype, copy=False)
        if data_by_position:
            frame = pd.DataFrame(data_by_position, copy=False)
            frame.index = index
        else:
            frame = pd.DataFrame(index=index)
        frame.columns = columns
        frame.attrs.update(_attrs(attrs))
        return frame
    raise ValueError(f"unknown pandas payload kind {kind!r}")


def _attrs(raw: Any) -> dict[Any, Any]:
    if not isinstance(raw, dict):
        raise ValueError("pandas attrs must be a dict")
    return raw
