"""The call pipeline, driven step by step with scripted answers and no backend.

The pipeline generator only describes what a call needs (``_steps``); these
tests play the drivers' part: each step the pipeline yields must be the one
the script expects, and the script's answer is sent back (or thrown in, for a
failing step). The engine is a stand-in whose settings and counters are real
and whose every other method refuses to run: if the pipeline performed a side
effect itself instead of asking for it, the test would fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from beautyspot_async._engine import Engine, EngineStats
from beautyspot_async._memory_tier import NO_VALUE
from beautyspot_async._pipeline import UNPROBED, Miss, Pipeline, TaskConfig
from beautyspot_async._portal import Waiter
from beautyspot_async._reader import Absent
from beautyspot_async._record import BLOB, INLINE, TaskRecord
from beautyspot_async._singleflight import Flight, FlightEnd, FlightOutcome
from beautyspot_async._steps import EXECUTE, Blocking, Call, Io, Steps, Wait
from beautyspot_async.cachekey import ArgumentKeyer
from beautyspot_async.exceptions import BackendError
from beautyspot_async.hooks import HookSet
from beautyspot_async.serializer import default_serializer

SERIALIZER = default_serializer()
OWNER = "host/1/lease"


def body(x: int) -> dict[str, int]:
    return {"x": x}


class Cancelled(BaseException):
    """Stands in for the event loop's cancellation exception."""


class Throw:
    """A scripted answer that fails the step with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Perform:
    """A scripted answer that performs the step for real (an in-process effect)."""


class ScriptedEngine:
    """Settings and counters of an Engine; everything else is answered by the script."""

    def __init__(self, *, bypass_errors: bool = False, default_wait: bool = True) -> None:
        self.stats = EngineStats()
        self.ready = True
        self.bypass_errors = bypass_errors
        self.default_wait = default_wait
        self.blob_threshold = 64 * 1024
        self.loop_bound = True
        self.memory_entries = 10_000
        self.landed: list[Flight] = []
        self.released: list[tuple[str, str]] = []

    def clock(self) -> float:
        return 1000.0

    # The in-process effects a Perform answer may run for real.
    def land(self, flight: Flight) -> None:
        self.landed.append(flight)

    def release_lease(self, key: str, owner: str) -> None:
        self.released.append((key, owner))

    def remember(self, key: str, entry: Any) -> None:
        pass

    def hit(self, key: str) -> None:
        """Like the counters, noted directly: a dict check, never I/O."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def unperformed(*args: Any) -> Any:
            raise AssertionError(f"the pipeline performed {name} itself instead of yielding it")

        unperformed.__name__ = name
        return unperformed


def make_pipeline(**engine_options: Any) -> tuple[Pipeline, ScriptedEngine]:
    engine = ScriptedEngine(**engine_options)
    task = TaskConfig(
        identity="tests.body",
        version=None,
        keyer=ArgumentKeyer(body),
        serializer=SERIALIZER,
        save_blob=None,
        content_type=None,
        ttl=None,
        wait=None,
        cache_if=None,
        hooks=HookSet(()),
    )
    return Pipeline(cast(Engine, engine), task), engine


def name_of(step: Any) -> str:
    if step is EXECUTE:
        return "EXECUTE"
    if type(step) is Wait:
        return str(step.submit.__name__)
    if type(step) in (Call, Io, Blocking):
        return str(step.fn.__name__)
    raise AssertionError(f"not a step: {step!r}")


def drive(steps: Steps, script: list[tuple[str, Any]]) -> tuple[Any, list[Any]]:
    """Run ``steps`` against ``script``; return the call's result and the steps seen."""
    seen: list[Any] = []
    answer: Any = None
    throw: BaseException | None = None
    pending = list(script)
    while True:
        try:
            step = steps.send(answer) if throw is None else steps.throw(throw)
        except StopIteration as stop:
            assert not pending, f"steps never asked for: {[name for name, _ in pending]}"
            return stop.value, seen
        seen.append(step)
        assert pending, f"unscripted step {name_of(step)}"
        expected, scripted = pending.pop(0)
        assert name_of(step) == expected, f"expected {expected}, the pipeline asked for {step!r}"
        answer, throw = scripted, None
        if isinstance(scripted, Throw):
            answer, throw = None, scripted.error
        elif isinstance(scripted, Perform):
            answer = step.fn(*step.args)


def stored(value: Any, **fields: Any) -> TaskRecord:
    base: dict[str, Any] = {
        "cache_key": "k",
        "func_name": "tests.body",
        "input_id": "i",
        "version": None,
        "result_type": INLINE,
        "content_type": None,
        "result_data": SERIALIZER.dumps(value),
    }
    base.update(fields)
    return TaskRecord(**base)


def miss(absent: bool = False) -> Miss:
    return Miss(("i", "k"), absent)


def leader() -> tuple[Flight, bool]:
    return Flight("k"), True


def outcome_of(flight: Flight) -> FlightOutcome:
    waiter = Waiter.for_sync()
    flight.add_waiter(waiter)
    return cast(FlightOutcome, waiter.wait_sync())


class TestHit:
    def test_a_stored_record_answers_the_call_and_the_flight(self) -> None:
        pipeline, engine = make_pipeline()
        flight = Flight("k")
        result, seen = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", (flight, True)),
                ("lease_owner", None),
                ("lookup", stored({"x": 1})),
                ("_share", Perform()),
            ],
        )
        assert result == {"x": 1}
        assert engine.stats.hits == 1
        assert engine.stats.misses == 0
        assert engine.landed == [flight]
        assert outcome_of(flight).kind is FlightEnd.RESOLVED
        share = seen[-1]
        assert share.args[2] == "k"  # kept in the memory tier too

    def test_a_blob_record_is_loaded_as_a_step(self) -> None:
        pipeline, _ = make_pipeline()
        record = stored(None, result_type=BLOB, result_data=None, result_value="loc")
        result, seen = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", leader()),
                ("lease_owner", None),
                ("lookup", record),
                ("load_payload", SERIALIZER.dumps([1, 2])),
                ("_share", None),
            ],
        )
        assert result == [1, 2]
        load = seen[3]
        assert type(load) is Io
        assert load.args == (record,)
        assert load.on_io_loop

    def test_unprobed_call_looks_once_before_joining_a_flight(self) -> None:
        pipeline, _ = make_pipeline()
        result, seen = drive(pipeline.steps((1,), {}, UNPROBED), [("_look", {"x": 1})])
        assert result == {"x": 1}
        assert seen[0].args == (pipeline.key_for((1,), {})[1],)

    def test_a_joiner_gets_the_leaders_result(self) -> None:
        pipeline, engine = make_pipeline()
        resolved = FlightOutcome(FlightEnd.RESOLVED, share=lambda: {"x": 1})
        result, _ = drive(
            pipeline.steps((1,), {}, miss()),
            [("join_flight", (Flight("k"), False)), ("add_waiter", resolved)],
        )
        assert result == {"x": 1}
        assert engine.stats.joins == 1

    def test_a_joiner_leads_when_the_leader_was_cancelled(self) -> None:
        pipeline, _ = make_pipeline()
        result, _ = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", (Flight("k"), False)),
                ("add_waiter", FlightOutcome(FlightEnd.ABANDONED)),
                ("join_flight", leader()),
                ("lease_owner", None),
                ("lookup", stored({"x": 1})),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}


class TestMiss:
    def test_executes_and_waits_for_the_durable_write(self) -> None:
        pipeline, engine = make_pipeline()
        result, seen = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", leader()),
                ("lease_owner", OWNER),
                ("lookup", Absent.OURS),
                ("hold_lease", None),
                ("EXECUTE", {"x": 1}),
                ("write", None),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}
        assert engine.stats.misses == 1
        record, owner, _report = seen[5].args
        assert record.cache_key == "k"
        assert owner == OWNER
        assert SERIALIZER.loads(record.result_data) == {"x": 1}

    def test_absent_without_leases_executes_at_once(self) -> None:
        pipeline, _ = make_pipeline()
        result, _ = drive(
            pipeline.steps((1,), {}, miss(absent=True)),
            [
                ("join_flight", leader()),
                ("lease_owner", None),
                ("EXECUTE", {"x": 1}),
                ("write", None),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}

    def test_write_behind_queues_without_waiting(self) -> None:
        pipeline, _ = make_pipeline(default_wait=False)
        result, _ = drive(
            pipeline.steps((1,), {}, miss(absent=True)),
            [
                ("join_flight", leader()),
                ("lease_owner", None),
                ("EXECUTE", {"x": 1}),
                ("write_behind", None),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}


class TestCorruptEntry:
    @pytest.mark.parametrize(
        "record",
        [
            stored({"x": 1}, problem="result_data is not bytes"),
            stored(None, result_data=b"\xc1 not msgpack"),
        ],
        ids=["flagged-by-the-backend", "undecodable"],
    )
    def test_is_counted_recomputed_and_rewritten(
        self, record: TaskRecord, caplog: pytest.LogCaptureFixture
    ) -> None:
        pipeline, engine = make_pipeline()
        result, _ = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", leader()),
                ("lease_owner", None),
                ("lookup", record),
                ("EXECUTE", {"x": 2}),
                ("write", None),
                ("_share", None),
            ],
        )
        assert result == {"x": 2}
        assert engine.stats.corrupt == 1
        assert engine.stats.misses == 1
        assert "is corrupt" in caplog.text


class TestLeaseHeldElsewhere:
    def test_waits_for_the_holders_result(self) -> None:
        pipeline, engine = make_pipeline()
        result, _ = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", leader()),
                ("lease_owner", OWNER),
                ("lookup", Absent.THEIRS),
                ("wait_for_lease", stored({"x": 1})),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}
        assert engine.stats.lease_waits == 1
        assert engine.stats.misses == 0

    def test_executes_when_the_lease_comes_free(self) -> None:
        pipeline, _ = make_pipeline()
        result, seen = drive(
            pipeline.steps((1,), {}, miss()),
            [
                ("join_flight", leader()),
                ("lease_owner", OWNER),
                ("lookup", Absent.THEIRS),
                ("wait_for_lease", Absent.OURS),
                ("hold_lease", None),
                ("EXECUTE", {"x": 1}),
                ("write", None),
                ("_share", None),
            ],
        )
        assert result == {"x": 1}
        assert seen[4].args == ("k", OWNER)


class TestCancellation:
    def test_a_cancelled_leader_hands_the_flight_over_and_releases_its_lease(self) -> None:
        pipeline, engine = make_pipeline()
        flight = Flight("k")
        with pytest.raises(Cancelled):
            drive(
                pipeline.steps((1,), {}, miss()),
                [
                    ("join_flight", (flight, True)),
                    ("lease_owner", OWNER),
                    ("lookup", Absent.OURS),
                    ("hold_lease", None),
                    ("EXECUTE", Throw(Cancelled())),
                    ("_give_up", Perform()),
                ],
            )
        assert outcome_of(flight).kind is FlightEnd.ABANDONED
        assert engine.landed == [flight]
        assert engine.released == [("k", OWNER)]

    def test_a_closed_pipeline_still_hands_the_flight_over(self) -> None:
        """A driver garbage-collected mid-call closes the generator, which may not yield."""
        pipeline, engine = make_pipeline()
        flight = Flight("k")
        steps = pipeline.steps((1,), {}, miss())
        assert name_of(steps.send(None)) == "join_flight"
        assert name_of(steps.send((flight, True))) == "lease_owner"
        assert name_of(steps.send(OWNER)) == "lookup"
        assert name_of(steps.send(Absent.OURS)) == "hold_lease"
        assert steps.send(None) is EXECUTE
        steps.close()
        assert outcome_of(flight).kind is FlightEnd.ABANDONED
        assert engine.landed == [flight]
        assert engine.released == [("k", OWNER)]

    def test_cancelled_while_waiting_for_durability_still_shares_the_result(self) -> None:
        pipeline, _ = make_pipeline()
        with pytest.raises(Cancelled):
            drive(
                pipeline.steps((1,), {}, miss(absent=True)),
                [
                    ("join_flight", leader()),
                    ("lease_owner", None),
                    ("EXECUTE", {"x": 1}),
                    ("write", Throw(Cancelled())),
                    ("_share", None),
                ],
            )


class TestBackendError:
    def test_fails_the_call_and_the_flight(self) -> None:
        pipeline, engine = make_pipeline()
        flight = Flight("k")
        error = BackendError("down", backend="scripted")
        with pytest.raises(BackendError) as caught:
            drive(
                pipeline.steps((1,), {}, miss()),
                [
                    ("join_flight", (flight, True)),
                    ("lease_owner", None),
                    ("lookup", Throw(error)),
                    ("_give_up", Perform()),
                ],
            )
        assert caught.value is error
        failed = outcome_of(flight)
        assert failed.kind is FlightEnd.FAILED
        assert failed.error is error
        assert engine.released == []

    def test_bypass_runs_uncached_with_a_warning(self) -> None:
        pipeline, engine = make_pipeline(bypass_errors=True)
        with pytest.warns(RuntimeWarning, match="uncached"):
            result, _ = drive(
                pipeline.steps((1,), {}, miss()),
                [
                    ("join_flight", leader()),
                    ("lease_owner", None),
                    ("lookup", Throw(BackendError("down", backend="scripted"))),
                    ("EXECUTE", {"x": 1}),
                    ("_let_go", None),
                    ("_share", None),
                ],
            )
        assert result == {"x": 1}
        assert engine.stats.misses == 1

    def test_a_failed_durable_write_fails_the_flight(self) -> None:
        pipeline, _ = make_pipeline()
        flight = Flight("k")
        error = BackendError("write failed", backend="scripted")
        with pytest.raises(BackendError):
            drive(
                pipeline.steps((1,), {}, miss(absent=True)),
                [
                    ("join_flight", (flight, True)),
                    ("lease_owner", None),
                    ("EXECUTE", {"x": 1}),
                    ("write", Throw(error)),
                    ("land", Perform()),
                    ("fail", Perform()),
                ],
            )
        assert outcome_of(flight).error is error


class TestProbe:
    def test_answers_a_non_waiting_hit_and_says_what_it_learned_otherwise(self) -> None:
        pipeline, engine = make_pipeline()
        answers: dict[str, Any] = {}
        engine.recall = lambda key, loads: NO_VALUE  # type: ignore[method-assign]
        engine.read_nowait = answers.get  # type: ignore[method-assign]
        ids = pipeline.key_for((1,), {})
        assert pipeline.probe((1,), {}) == Miss(ids, True)
        answers[ids[1]] = NO_VALUE  # cannot tell without waiting
        assert pipeline.probe((1,), {}) == Miss(ids, False)
        answers[ids[1]] = stored({"x": 1}, cache_key=ids[1])
        assert pipeline.probe((1,), {}) == {"x": 1}
        assert engine.stats.hits == 1
