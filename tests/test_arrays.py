"""numpy arrays and pandas objects round-trip exactly through the default serializer.

No registration is needed; values come back equal, of the same type, with
the same dtype, shape, byte order, index, names and attrs. Object arrays are
refused with a message saying what to do, and no stored byte crashes, hangs
or makes a reader allocate what the data does not hold.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack  # type: ignore[import-untyped]
import pytest

from beautyspot_async import _arrays
from beautyspot_async.exceptions import SerializationError
from beautyspot_async.serializer import MsgpackSerializer

from ._services import require_module
from ._spots import open_spot

np = require_module("numpy", extra="dev")
pd = require_module("pandas", extra="dev")
tm = pd.testing


@pytest.fixture
def ser() -> MsgpackSerializer:
    return MsgpackSerializer()


def round_trip(ser: MsgpackSerializer, value: Any) -> Any:
    return ser.loads(ser.dumps(value))


def assert_same_array(a: Any, b: Any) -> None:
    assert type(b) is np.ndarray
    assert b.dtype == a.dtype
    assert b.dtype.str == a.dtype.str  # byte order too
    assert b.shape == a.shape
    # bit for bit: NaN and NaT compare equal to themselves here
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


# -- numpy ---------------------------------------------------------------------

ARRAYS = {
    "int64": lambda: np.arange(12).reshape(3, 4),
    "uint8": lambda: np.arange(256, dtype=np.uint8),
    "int8-0d": lambda: np.array(-3, dtype=np.int8),
    "float32": lambda: np.linspace(0, 1, 7, dtype=np.float32),
    "float64-nan-inf": lambda: np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300]),
    "float16": lambda: np.array([1.5, 2.25], dtype=np.float16),
    "complex128": lambda: np.array([1 + 2j, np.nan * 1j]),
    "complex64": lambda: np.array([[1j, 2]], dtype=np.complex64),
    "bool": lambda: np.array([[True, False], [False, True]]),
    "big-endian-i4": lambda: np.arange(6, dtype=">i4").reshape(2, 3),
    "big-endian-f8": lambda: np.array([1.5, -2.0], dtype=">f8"),
    "datetime64[D]": lambda: np.array(["2024-02-29", "NaT"], dtype="datetime64[D]"),
    "datetime64[ns]": lambda: np.array(["2024-01-01T12:00:00.123456789"], dtype="M8[ns]"),
    "datetime64-generic": lambda: np.array(["NaT"], dtype="M8"),
    "timedelta64[ms]": lambda: np.array([1, -2, 3], dtype="m8[ms]"),
    "unicode": lambda: np.array(["", "é", "long text"]),
    "bytes": lambda: np.array([b"", b"\x00ab", b"xyz"]),
    "empty": lambda: np.zeros((0, 3)),
    "empty-0-by-0": lambda: np.empty((0, 0), dtype=np.int16),
    "3d": lambda: np.arange(24.0).reshape(2, 3, 4),
}


@pytest.mark.parametrize("make", list(ARRAYS.values()), ids=list(ARRAYS))
def test_array_round_trips_exactly(ser: MsgpackSerializer, make: Any) -> None:
    a = make()
    b = round_trip(ser, a)
    assert_same_array(a, b)
    assert b.flags.writeable


def test_arrays_use_the_reserved_numpy_code(ser: MsgpackSerializer) -> None:
    raw = msgpack.unpackb(ser.dumps(np.arange(3)), ext_hook=lambda c, d: c)
    assert raw == _arrays.NDARRAY_CODE == 124


def test_fortran_order_is_kept_without_reordering(ser: MsgpackSerializer) -> None:
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    b = round_trip(ser, a)
    assert_same_array(a, b)
    assert b.flags.f_contiguous
    assert not b.flags.c_contiguous
    assert (b == a).all()


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2],
        lambda a: a[:, 1:3],
        lambda a: a.T[::-1],
        lambda a: a.reshape(4, 6)[1::2, ::3],
    ],
    ids=["stride", "slice", "reversed-transpose", "2d-stride"],
)
def test_non_contiguous_views(ser: MsgpackSerializer, view: Any) -> None:
    a = view(np.arange(24, dtype=">i8").reshape(6, 4))
    b = round_trip(ser, a)
    assert b.dtype.str == ">i8"
    assert b.shape == a.shape
    assert (b == a).all()


def test_read_only_arrays_come_back_read_only(ser: MsgpackSerializer) -> None:
    a = np.arange(5)
    a.flags.writeable = False
    b = round_trip(ser, a)
    assert not b.flags.writeable
    assert (b == a).all()
    writable = round_trip(ser, np.arange(5))
    writable[0] = 99  # a writable original gives a writable, independent copy
    assert writable[0] == 99


def test_decoded_array_is_aligned(ser: MsgpackSerializer) -> None:
    a = np.arange(10.0)
    a.flags.writeable = False
    assert round_trip(ser, a).flags.aligned


SCALARS = [
    np.float64(1.5),
    np.float32(-0.25),
    np.float16(3),
    np.int8(-7),
    np.int32(3),
    np.int64(2**62),
    np.uint64(2**64 - 1),
    np.bool_(True),
    np.bool_(False),
    np.complex128(1 - 2j),
    np.datetime64("2024-03-01", "D"),
    np.datetime64("2024-03-01T01:02:03.456", "ms"),
    np.datetime64("NaT", "ns"),
    np.timedelta64(90, "m"),
    np.str_("text"),
    np.bytes_(b"raw"),
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: f"{type(v).__name__}({v!r})")
def test_numpy_scalars_keep_their_type(ser: MsgpackSerializer, value: Any) -> None:
    back = round_trip(ser, value)
    assert type(back) is type(value)
    assert np.asarray(back).dtype == np.asarray(value).dtype
    assert np.asarray(back).tobytes() == np.asarray(value).tobytes()


def test_numpy_values_nest_in_containers(ser: MsgpackSerializer) -> None:
    value = {
        "a": [np.arange(3), (np.float64(2.5), np.int16(4))],
        ("k", 1): {np.array(["x", "y"]).tobytes(): frozenset({np.int64(1)})},
        "t": (np.zeros((2, 2), dtype=">f4"),),
    }
    back = round_trip(ser, value)
    assert_same_array(value["a"][0], back["a"][0])
    assert type(back["a"][1]) is tuple
    assert type(back["a"][1][0]) is np.float64
    assert back["a"][1][0] == 2.5
    assert type(back["a"][1][1]) is np.int16
    assert type(next(iter(back[("k", 1)].values()))) is frozenset
    assert_same_array(value["t"][0], back["t"][0])


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.array([1, "a", None], dtype=object), "dtype object"),
        (np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]), "structured"),
        (np.zeros(2, dtype="V4"), "void"),
        (np.zeros(2, dtype="V4")[0], "void"),
        (np.zeros(2, dtype=[("x", "O")]), "structured"),
        (np.array(["a"], dtype=np.dtypes.StringDType()), "StringDType"),
    ],
    ids=["object", "structured", "void", "void-scalar", "structured-object", "StringDType"],
)
def test_unsupported_dtypes_are_refused_with_advice(
    ser: MsgpackSerializer, value: Any, words: str
) -> None:
    with pytest.raises(SerializationError, match=words) as info:
        ser.dumps({"result": [value]})
    assert "tolist" in str(info.value) or "supported" in str(info.value)


def test_object_array_message_says_what_to_do(ser: MsgpackSerializer) -> None:
    with pytest.raises(SerializationError) as info:
        ser.dumps(np.array([{"a": 1}], dtype=object))
    message = str(info.value)
    assert "pickle is never used" in message
    assert "astype" in message
    assert ".tolist()" in message


def test_ndarray_subclasses_are_not_folded_into_ndarray(ser: MsgpackSerializer) -> None:
    with pytest.raises(SerializationError, match="MaskedArray"):
        ser.dumps(np.ma.masked_array([1, 2], mask=[True, False]))


# -- pandas --------------------------------------------------------------------


def frame_of_every_dtype() -> Any:
    n = 4
    return pd.DataFrame(
        {
            "int": np.arange(n, dtype=np.int64),
            "int32": np.arange(n, dtype=np.int32),
            "float": [1.0, np.nan, -0.0, np.inf],
            "bool": [True, False, True, False],
            "dt": pd.date_range("2024-01-01", periods=n, freq="h"),
            "dt_ns": pd.Series(pd.date_range("2024-01-01", periods=n)).astype("datetime64[ns]"),
            "dt_paris": pd.date_range("2024-03-30", periods=n, freq="12h", tz="Europe/Paris"),
            "dt_zoneinfo": pd.date_range("2024-01-01", periods=n, tz=ZoneInfo("America/New_York")),
            "dt_utc": pd.date_range("2024-01-01", periods=n, tz="UTC"),
            "dt_fixed": pd.date_range(
                "2024-01-01", periods=n, tz=dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
            "td": pd.to_timedelta([1, 2, None, 4], unit="s"),
            "cat": pd.Categorical(["a", "b", None, "a"]),
            "cat_ordered": pd.Categorical(
                ["lo", "hi", "lo", "hi"], categories=["lo", "hi"], ordered=True
            ),
            "cat_int": pd.Categorical([3, 1, 3, 2]),
            "Int64": pd.array([1, None, 3, -4], dtype="Int64"),
            "UInt8": pd.array([1, None, 3, 255], dtype="UInt8"),
            "Float64": pd.array([1.5, None, np.nan, 2.0], dtype="Float64"),
            "boolean": pd.array([True, None, False, True], dtype="boolean"),
            "string": pd.array(["a", None, "é", ""], dtype="string"),
            "str_default": pd.Series(["x", None, "y", "z"]),
            "object": pd.Series(["text", None, dt.date(2024, 1, 2), (1, "tuple")], dtype=object),
            "object_numbers": pd.Series([1, 2.5, None, 10**30], dtype=object),
        }
    )


def test_frame_of_every_dtype_round_trips(ser: MsgpackSerializer) -> None:
    df = frame_of_every_dtype()
    back = round_trip(ser, df)
    tm.assert_frame_equal(df, back, check_exact=True)
    assert list(back.dtypes) == list(df.dtypes)
    assert type(back["object"].iloc[3]) is tuple
    assert type(back["object"].iloc[2]) is dt.date
    for column in ("dt_paris", "dt_zoneinfo", "dt_utc", "dt_fixed"):
        assert repr(back[column].dt.tz) == repr(df[column].dt.tz)


def test_float64_nan_stays_apart_from_na(ser: MsgpackSerializer) -> None:
    values = np.array([np.nan, 1.0, 0.0])
    mask = np.array([False, False, True])
    s = pd.Series(pd.arrays.FloatingArray(values, mask))
    back = round_trip(ser, s)
    tm.assert_series_equal(s, back, check_exact=True)
    assert back.isna().tolist() == [False, False, True]
    assert np.isnan(back.to_numpy(dtype=float, na_value=0.0)[0])


def test_pytz_zones_round_trip(ser: MsgpackSerializer) -> None:
    pytz = pytest.importorskip("pytz")
    s = pd.Series(
        pd.date_range("2024-03-30", periods=3, freq="12h", tz=pytz.timezone("Europe/Paris"))
    )
    tm.assert_series_equal(s, round_trip(ser, s), check_exact=True)


def test_named_fixed_offset_zone_keeps_its_name(ser: MsgpackSerializer) -> None:
    tz = dt.timezone(dt.timedelta(hours=-3), "BRT")
    s = pd.Series(pd.date_range("2024-01-01", periods=2, tz=tz))
    back = round_trip(ser, s)
    tm.assert_series_equal(s, back, check_exact=True)
    assert back.dt.tz.tzname(None) == "BRT"


def test_frame_uses_the_reserved_pandas_code(ser: MsgpackSerializer) -> None:
    raw = msgpack.unpackb(ser.dumps(pd.DataFrame({"a": [1]})), ext_hook=lambda c, d: c)
    assert raw == _arrays.PANDAS_CODE == 125


def test_decoded_frame_is_writable(ser: MsgpackSerializer) -> None:
    back = round_trip(ser, pd.DataFrame({"a": [1, 2], "b": [1.0, 2.0]}))
    back.iloc[0, 0] = 10
    back.loc[1, "b"] = 5.0
    assert back["a"].tolist() == [10, 2]
    assert back["b"].tolist() == [1.0, 5.0]


INDEXES = {
    "range": lambda: pd.RangeIndex(0, 8, 2),
    "range-named-offset": lambda: pd.RangeIndex(10, -2, -3, name="r"),
    "int": lambda: pd.Index([5, 3, 9], dtype="int64"),
    "uint": lambda: pd.Index([5, 3, 9], dtype="uint32"),
    "float": lambda: pd.Index([0.5, np.nan, 2.0]),
    "str": lambda: pd.Index(["a", "b", "c"], name="letters"),
    "object": lambda: pd.Index(["a", 1, None], dtype=object),
    "bool": lambda: pd.Index([True, False]),
    "datetime": lambda: pd.DatetimeIndex(["2024-01-01", "2024-01-05", "NaT"]),
    "datetime-freq": lambda: pd.date_range("2024-01-01", periods=3, freq="D", name="day"),
    "datetime-business-freq": lambda: pd.bdate_range("2024-01-01", periods=5),
    "datetime-tz-freq": lambda: pd.date_range("2024-01-01", periods=3, freq="h", tz="Europe/Paris"),
    "datetime-utc": lambda: pd.date_range("2024-01-01", periods=3, tz="UTC"),
    "timedelta-freq": lambda: pd.timedelta_range("1 day", periods=3, freq="6h"),
    "categorical": lambda: pd.CategoricalIndex(["x", "y", "x"], ordered=True, name=("a", 1)),
    "Int64": lambda: pd.Index([1, None], dtype="Int64"),
    "multi": lambda: pd.MultiIndex.from_product(
        [["a", "b"], [1, 2], pd.date_range("2024-01-01", periods=2)], names=["k", None, 3]
    ),
    "multi-range-level": lambda: pd.MultiIndex.from_product([range(3), ["x", "y"]]),
    "multi-unused-levels": lambda: pd.MultiIndex.from_arrays([["a", "b"], [1, 2]])[:1],
}


@pytest.mark.parametrize("make", list(INDEXES.values()), ids=list(INDEXES))
def test_index_round_trips_exactly(ser: MsgpackSerializer, make: Any) -> None:
    index = make()
    back = round_trip(ser, index)
    tm.assert_index_equal(index, back, exact=True, check_exact=True)
    assert back.names == index.names
    assert getattr(back, "freq", None) == getattr(index, "freq", None)


@pytest.mark.parametrize("make", list(INDEXES.values()), ids=list(INDEXES))
def test_frame_and_series_on_every_index(ser: MsgpackSerializer, make: Any) -> None:
    index = make()
    n = len(index)
    df = pd.DataFrame({"v": np.arange(n), "w": [str(i) for i in range(n)]}, index=index)
    tm.assert_frame_equal(df, round_trip(ser, df), check_exact=True)
    s = pd.Series(np.arange(n, dtype=np.float32), index=index, name="s")
    back = round_trip(ser, s)
    tm.assert_series_equal(s, back, check_exact=True)
    assert getattr(back.index, "freq", None) == getattr(index, "freq", None)
    # the index as the column labels too
    columns = pd.DataFrame([np.arange(n)], columns=index)
    tm.assert_frame_equal(columns, round_trip(ser, columns), check_exact=True)


def test_column_labels_of_any_type(ser: MsgpackSerializer) -> None:
    df = pd.DataFrame([[1, 2.0, "a", True]], columns=[0, 1.5, ("t", 2), None])
    back = round_trip(ser, df)
    tm.assert_frame_equal(df, back, check_exact=True)
    assert list(back.columns) == [0, 1.5, ("t", 2), None]


def test_duplicate_column_labels(ser: MsgpackSerializer) -> None:
    df = pd.DataFrame([[1, "x", 2.5]], columns=["a", "a", "b"])
    tm.assert_frame_equal(df, round_trip(ser, df), check_exact=True)


def test_multiindex_columns(ser: MsgpackSerializer) -> None:
    columns = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["top", "sub"])
    df = pd.DataFrame(np.arange(6).reshape(2, 3), columns=columns, index=["r1", "r2"])
    tm.assert_frame_equal(df, round_trip(ser, df), check_exact=True)


def test_frames_from_numpy_2d_and_fortran_blocks(ser: MsgpackSerializer) -> None:
    df = pd.DataFrame(np.asfortranarray(np.arange(20.0).reshape(4, 5)))
    tm.assert_frame_equal(df, round_trip(ser, df), check_exact=True)
    sliced = df.iloc[::2, 1:4]
    tm.assert_frame_equal(sliced, round_trip(ser, sliced), check_exact=True)


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame(),
        pd.DataFrame(index=pd.RangeIndex(3)),
        pd.DataFrame({"a": pd.Series([], dtype="Int64"), "b": pd.Series([], dtype=object)}),
        pd.DataFrame(columns=["a", "b"]),
    ],
    ids=["empty", "no-columns", "no-rows-typed", "columns-only"],
)
def test_empty_frames(ser: MsgpackSerializer, df: Any) -> None:
    tm.assert_frame_equal(df, round_trip(ser, df), check_exact=True)


def test_series_name_index_and_attrs(ser: MsgpackSerializer) -> None:
    s = pd.Series(
        pd.array([1, None, 3], dtype="Int64"),
        index=pd.Index(["a", "b", "c"], name="key"),
        name=("metric", 2),
    )
    s.attrs["unit"] = "kg"
    back = round_trip(ser, s)
    tm.assert_series_equal(s, back, check_exact=True)
    assert back.name == ("metric", 2)
    assert back.attrs == {"unit": "kg"}


def test_frame_attrs(ser: MsgpackSerializer) -> None:
    df = pd.DataFrame({"a": [1]})
    df.attrs.update({"source": "api", "when": dt.date(2024, 1, 1), "tags": ("x", "y")})
    back = round_trip(ser, df)
    assert back.attrs == df.attrs
    assert type(back.attrs["tags"]) is tuple


@pytest.mark.parametrize(
    "s",
    [
        pd.Series([1.5, 2.5], name=None),
        pd.Series([], dtype="float64"),
        pd.Series(["a", None, "b"], dtype=object),
        pd.Series([[1, 2], {"k": (3,)}], dtype=object),
        pd.Series(pd.Categorical([], categories=["a"])),
        pd.Series(pd.array(["x", None], dtype="string")),
        pd.Series(pd.date_range("2024-01-01", periods=3, tz="UTC", unit="s")),
        pd.Series(pd.array([True, None], dtype="boolean"), name=0),
    ],
    ids=repr,
)
def test_series_round_trip(ser: MsgpackSerializer, s: Any) -> None:
    tm.assert_series_equal(s, round_trip(ser, s), check_exact=True)


def test_pandas_values_nest_in_containers(ser: MsgpackSerializer) -> None:
    df = frame_of_every_dtype()
    value = {"frames": [df, (df["int"], df.index)], "n": np.int64(4)}
    back = round_trip(ser, value)
    tm.assert_frame_equal(df, back["frames"][0], check_exact=True)
    assert type(back["frames"][1]) is tuple
    tm.assert_series_equal(df["int"], back["frames"][1][0], check_exact=True)
    tm.assert_index_equal(df.index, back["frames"][1][1], exact=True)


def test_object_column_with_an_unencodable_value_names_it(ser: MsgpackSerializer) -> None:
    class Opaque:
        pass

    df = pd.DataFrame({"a": pd.Series([Opaque()], dtype=object)})
    with pytest.raises(SerializationError, match="Opaque"):
        ser.dumps(df)


@pytest.mark.parametrize(
    "value",
    [
        pd.Series(pd.period_range("2024-01", periods=2, freq="M")),
        pd.Series(pd.arrays.IntervalArray.from_breaks([0, 1, 2])),
        pd.DataFrame({"sparse": pd.arrays.SparseArray([0, 1, 0])}),
    ],
    ids=["period", "interval", "sparse"],
)
def test_unsupported_pandas_dtypes_are_refused(ser: MsgpackSerializer, value: Any) -> None:
    with pytest.raises(SerializationError, match=r"dtype .*Convert it first"):
        ser.dumps(value)


def test_dataframe_subclasses_are_not_folded(ser: MsgpackSerializer) -> None:
    class MyFrame(pd.DataFrame):  # type: ignore[misc]
        pass

    with pytest.raises(SerializationError, match="MyFrame"):
        ser.dumps(MyFrame({"a": [1]}))


# -- nothing is imported eagerly -------------------------------------------------


def test_importing_the_package_imports_neither_numpy_nor_pandas() -> None:
    code = textwrap.dedent(
        """
        import sys
        import beautyspot_async
        from beautyspot_async.serializer import MsgpackSerializer
        s = MsgpackSerializer()
        assert s.loads(s.dumps({"a": (1, 2.5)})) == {"a": (1, 2.5)}
        print(sorted(m for m in ("numpy", "pandas") if m in sys.modules))
        """
    )
    src = str(Path(_arrays.__file__).parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": ""},
    )
    assert out.stdout.strip() == "[]", out.stderr


# -- damaged data ----------------------------------------------------------------


def _numpy_ext(header: list[Any], raw: bytes) -> bytes:
    packed = msgpack.packb(header)
    start = 4 + len(packed)
    payload = struct.pack("<I", len(packed)) + packed + b"\0" * (-start % 16) + raw
    return msgpack.packb(msgpack.ExtType(124, payload))


def _pandas_ext(payload: list[Any]) -> bytes:
    return msgpack.packb(msgpack.ExtType(125, msgpack.packb(payload)))


def _array_ext(a: Any) -> Any:
    return msgpack.ExtType(124, _arrays._encode_ndarray(a, msgpack.packb))


HUGE = 2**62

DAMAGED = {
    "empty-payload": msgpack.packb(msgpack.ExtType(124, b"")),
    "short-length": msgpack.packb(msgpack.ExtType(124, b"\x01\x00")),
    "length-beyond-payload": msgpack.packb(msgpack.ExtType(124, b"\xff\xff\xff\x7f\x90")),
    "header-not-a-list": _numpy_ext(7, b""),  # type: ignore[arg-type]
    "huge-shape": _numpy_ext(["a", "<f8", [HUGE, HUGE], False, True], b"\0" * 16),
    "huge-shape-times-zero": _numpy_ext(["a", "<f8", [0, 2**63 + 5], False, True], b""),
    "negative-dim": _numpy_ext(["a", "<f8", [-1], False, True], b""),
    "too-many-dims": _numpy_ext(["a", "<i1", [1] * 65, False, True], b"\0"),
    "short-data": _numpy_ext(["a", "<i4", [4], False, True], b"\0" * 15),
    "long-data": _numpy_ext(["a", "<i4", [4], False, True], b"\0" * 17),
    "object-dtype": _numpy_ext(["a", "O", [1], False, True], b"\0" * 8),
    "structured-dtype": _numpy_ext(["a", "i4,i4", [1], False, True], b"\0" * 8),
    "subarray-dtype": _numpy_ext(["a", "(1000000,)i4", [1], False, True], b"\0" * 8),
    "unsized-dtype": _numpy_ext(["a", "S0", [10**9], False, True], b""),
    "junk-dtype": _numpy_ext(["a", "not a dtype", [1], False, True], b"\0" * 8),
    "long-dtype": _numpy_ext(["a", "<" + "i" * 5000, [1], False, True], b"\0" * 8),
    "huge-str-dtype": _numpy_ext(["a", "<U2147483647", [1], False, True], b"\0" * 8),
    "scalar-short": _numpy_ext(["s", "<f8"], b"\0" * 4),
    "unknown-kind": _numpy_ext(["z", "<f8"], b"\0" * 8),
    "pandas-not-a-list": msgpack.packb(msgpack.ExtType(125, msgpack.packb({"a": 1}))),
    "pandas-truncated": msgpack.packb(msgpack.ExtType(125, msgpack.packb(["frame", 1])[:-1])),
    "pandas-unknown-kind": _pandas_ext(["panel", 1, 2, 3, 4]),
    "series-length-mismatch": _pandas_ext(
        ["series", ["range", 0, HUGE, 1, None], ["numpy", _array_ext(np.arange(3))], None, {}]
    ),
    "frame-column-count": _pandas_ext(
        [
            "frame",
            ["range", 0, 5, 1, None],
            ["range", 0, 1, 1, None],
            [["numpy", _array_ext(np.arange(1))]],
            {},
        ]
    ),
    "frame-column-length": _pandas_ext(
        [
            "frame",
            ["range", 0, 1, 1, None],
            ["range", 0, HUGE, 1, None],
            [["numpy", _array_ext(np.arange(1))]],
            {},
        ]
    ),
    "huge-multiindex-level": _pandas_ext(
        [
            "index",
            [
                "multi",
                [["range", 0, HUGE, 1, None]],
                [_array_ext(np.array([0, 1]))],
                [None],
            ],
        ]
    ),
    "multiindex-code-out-of-range": _pandas_ext(
        ["index", ["multi", [["range", 0, 2, 1, None]], [_array_ext(np.array([5]))], [None]]]
    ),
    "huge-categories": _pandas_ext(
        [
            "index",
            [
                "index",
                ["categorical", ["range", 0, HUGE, 1, None], False, _array_ext(np.array([0]))],
                None,
                None,
            ],
        ]
    ),
    "category-code-out-of-range": _pandas_ext(
        [
            "index",
            [
                "index",
                ["categorical", ["range", 0, 2, 1, None], False, _array_ext(np.array([7]))],
                None,
                None,
            ],
        ]
    ),
    "masked-shape-mismatch": _pandas_ext(
        [
            "index",
            [
                "index",
                ["masked", _array_ext(np.arange(3)), _array_ext(np.zeros(2, bool))],
                None,
                None,
            ],
        ]
    ),
    "2d-column": _pandas_ext(
        [
            "series",
            ["range", 0, 2, 1, None],
            ["numpy", _array_ext(np.zeros((2, 2)))],
            None,
            {},
        ]
    ),
    "bad-freq": _pandas_ext(
        ["index", ["index", ["numpy", _array_ext(np.array([1, 5], "M8[ns]"))], None, "D"]]
    ),
    "freq-on-int-index": _pandas_ext(
        ["index", ["index", ["numpy", _array_ext(np.arange(2))], None, "D"]]
    ),
    "zone-key-escaping": _pandas_ext(
        [
            "index",
            [
                "index",
                ["datetimetz", ["zoneinfo", "../../etc/passwd"], _array_ext(np.zeros(1, "M8[ns]"))],
                None,
                None,
            ],
        ]
    ),
    "zone-kind": _pandas_ext(
        [
            "index",
            [
                "index",
                ["datetimetz", ["pytz-ish"], _array_ext(np.zeros(1, "M8[ns]"))],
                None,
                None,
            ],
        ]
    ),
    "string-values-not-str": _pandas_ext(
        ["index", ["index", ["string", "python", False, [1, 2]], None, None]]
    ),
    "values-kind": _pandas_ext(["index", ["index", ["mystery"], None, None]]),
    "attrs-not-a-dict": _pandas_ext(
        ["series", ["range", 0, 0, 1, None], ["object", []], None, [1]]
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data", list(DAMAGED.values()), ids=list(DAMAGED))
def test_damaged_payloads_raise_serialization_error(ser: MsgpackSerializer, data: bytes) -> None:
    with pytest.raises(SerializationError):
        ser.loads(data)


@pytest.mark.timeout(60)
def test_random_damage_never_crashes(ser: MsgpackSerializer) -> None:
    df = frame_of_every_dtype()
    df.index = pd.MultiIndex.from_arrays([["a", "b", "c", "d"], [1, 2, 1, 2]])
    originals = [
        ser.dumps(df),
        ser.dumps([np.arange(20, dtype=">i4").reshape(4, 5), np.float64(2.5)]),
        ser.dumps(pd.Series(pd.Categorical(["a", "b"]), index=pd.date_range("2024", periods=2))),
    ]
    rng = random.Random(1234)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            pos = rng.randrange(len(data))
            if action < 0.6:
                data[pos] = rng.randrange(256)
            elif action < 0.8:
                del data[pos:]
            else:
                data[pos:pos] = bytes([rng.randrange(256)])
            if not data:
                data = bytearray(b"\xc1")
        try:
            ser.loads(bytes(data))
        except SerializationError:
            outcomes["refused"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["refused"] > 0


# -- through a Spot ----------------------------------------------------------------


@pytest.mark.anyio
async def test_marked_function_returning_a_frame_is_a_hit_in_a_new_spot(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    async def run() -> Any:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def load(n: int) -> Any:
                calls.append(n)
                return frame_of_every_dtype().head(n)

            return await load(3)

    first = await run()
    second = await run()
    assert calls == [3]
    tm.assert_frame_equal(first, second, check_exact=True)
    tm.assert_frame_equal(frame_of_every_dtype().head(3), second, check_exact=True)


@pytest.mark.anyio
async def test_large_array_goes_to_blob_storage_and_back(tmp_path: Path) -> None:
    calls: list[int] = []
    big = np.arange(200_000, dtype=">f8").reshape(400, 500)

    async def run() -> Any:
        async with open_spot("sqlite", tmp_path, blob_threshold=64 * 1024) as spot:

            @spot.mark
            async def compute() -> Any:
                calls.append(1)
                return {"big": big, "scale": np.float32(0.5)}

            return await compute()

    await run()
    blobs = list((tmp_path / "t_blobs").rglob("*.bin"))
    assert len(blobs) == 1
    assert blobs[0].stat().st_size > big.nbytes
    result = await run()
    assert calls == [1]
    assert_same_array(big, result["big"])
    assert result["big"].flags.writeable
    assert type(result["scale"]) is np.float32


def test_intact_entries_are_well_formed(ser: MsgpackSerializer) -> None:
    # well_formed tells "unregistered code" from "damaged bytes"; the pandas
    # payload is walked into, the numpy one is a leaf.
    from beautyspot_async._codecs import well_formed

    assert well_formed(ser.dumps([frame_of_every_dtype(), np.arange(4), np.float64(1)]))
    assert not well_formed(ser.dumps(frame_of_every_dtype())[:-3])
