"""`WorkflowEnvironment`: your workflows on the real engine, in process, with a clock that skips ahead.

```python
from datetime import timedelta
from grctl.testing import WorkflowEnvironment

async def test_approval_times_out_after_a_week():
    async with WorkflowEnvironment([approval]) as env:
        handle = await env.client.start_workflow("Approval", "a-1", {"amount": 50})
        assert await handle.result() == "expired"  # 7 days pass in milliseconds
```

What runs is the engine a worker runs: the state machine (`grctl.engine.machine.Machine`), the
partition processor with its RocksDB store, the group committer and its commit protocol, the
step executor with the journal and replay, the query answerer, and the real `Client`. Only
Kafka is replaced, by lists in memory (`grctl.testing._transport`), and the clock, by a
`VirtualClock`.

**Time skipping.** While a test awaits `handle.result()` (or `client.run_workflow`), or
inside `env.sleep(...)`, the environment moves the clock to the next thing due (a durable
timer: wait timeout, workflow timeout, resume after a task back-off, retention; a `ctx.sleep`;
a short task back-off; a step deadline) as soon as nothing else can happen: no input waiting,
nothing staged, and every running step waiting on the clock or on a child. A step that does
real I/O holds time still until it is done. At other times the clock stands still, so a test
can start a run and send it an event before its 7-day timeout without racing the clock.

**Replay safety.** `env.crash_next_step()` makes the next step that finishes "crash the
worker" after its journaled calls committed and before its outcome did: the environment drops
everything uncommitted and reopens the partitions as a new session does, and the step runs
again from its journal, as it would on the next owner after a real crash. Non-deterministic
code fails the run with `NonDeterminismError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from grctl.codec import CodecRegistry, default_codec
from grctl.engine import keys
from grctl.engine.machine import Machine, StepOutcome
from grctl.engine.records import timer_decoder
from grctl.errors import InvalidArgumentError, KafkaSetupError, RegistrationError, TestEnvironmentError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.models.history import HistoryEvent
from grctl.models.limits import Limiter
from grctl.state.partition_store import PartitionStore, StoreMemory
from grctl.testing._transport import (
    AnyTopic,
    InProcessClient,
    InProcessClientIO,
    InProcessPublisher,
    Record,
    Topics,
)
from grctl.testing.clock import VirtualClock
from grctl.worker._edges.sources import Source, SourcePartition
from grctl.worker._partition.ports import ProcessorServices, RunningStep
from grctl.worker._partition.processor import PartitionProcessor
from grctl.worker._session.commit import GroupCommitter
from grctl.worker._session.executor import PartitionTasks, StepExecutor
from grctl.worker._session.queries import QueryAnswerer
from grctl.worker._session.served import ServedCatalog
from grctl.workflow.handle import WorkflowHandle
from grctl.workflow.registry import WorkflowSet
from grctl.workflow.workflow import Workflow

__all__ = ["WorkflowEnvironment"]

#: The in-process namespace's name (its topics are `grctl.<namespace>.*`, in memory).
NAMESPACE = "test"
#: Timers of one partition fired per round (all of them, in practice).
FIRE_LIMIT = 100_000
#: Loop turns the environment yields between rounds, so that started steps reach their first wait.
SETTLE_YIELDS = 3


class _Outbox:
    """The group committer, seen by the processors, telling the environment that something was staged."""

    def __init__(self, committer: GroupCommitter, touched: Any) -> None:
        self._committer = committer
        self._touched = touched

    def stage(self, partition: int, key: bytes, value: bytes | None) -> None:
        self._committer.stage(partition, key, value)
        self._touched()

    def produce(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Any = None,
                origin: str | None = None) -> None:  # fmt: skip
        self._committer.produce(topic, partition, key, value, headers, origin)
        self._touched()

    def after_commit(self, callback: Any) -> None:
        self._committer.after_commit(callback)
        self._touched()

    def offsets_moved(self) -> None:
        self._committer.offsets_moved()

    @property
    def full(self) -> bool:
        return self._committer.full


class _Processor(PartitionProcessor):
    """The real processor; a step's outcome may be withheld to simulate a crash (`crash_next_step`)."""

    env: WorkflowEnvironment

    def step_finished(self, rs: RunningStep, outcome: StepOutcome) -> None:
        env = self.env
        if env._crash_armed and not rs.cancelled and self.running.get(rs.wf_id) is rs and not self.closing:
            env._crash_armed = False
            env._crash = asyncio.get_running_loop().create_task(env._restart(f"{rs.wf_id} step {rs.seq}"))
            return  # the outcome is lost with the worker
        super().step_finished(rs, outcome)
        self.env._touched()

    def child_outcome(self, runtime: Any, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        fut = super().child_outcome(runtime, child_wf_id)
        self.env._touched()
        return fut


class WorkflowEnvironment:
    """Runs workflows on the real engine in process, with a time-skipping clock (see the module docstring).

    Use as `async with WorkflowEnvironment(workflows) as env:` (or `await env.start()` and
    `await env.stop()`); the pytest plugin's `grctl_env` fixture does it for you.

    Args:
        workflows: the workflow definitions to serve (as a worker's list).
        partitions: partitions of the in-process namespace.
        start_time: the clock's first reading (default: now, in whole seconds).
        codec: the codec for user values (as `Worker(codec=...)` and `Client(codec=...)`).
        retention: how long ended runs are kept (the namespace's run retention; default 7 days).
        max_concurrent_steps: steps executing at once (as the worker's).
        task_handlers: remote tasks answered in process: task name -> async function of the
            payload (what it returns is the result; what it raises fails the attempt, as a
            `grctl.TaskWorker` handler's would). Without any, remote tasks are not answered
            (they time out). Heartbeats and cancels are not simulated.
        sources: Kafka sources (as `Worker(sources=...)`) fed by `env.produce(topic, ...)`; the
            formats without a schema registry.
        limiters: limiters to create when the environment starts (as `Worker(limiters=...)`);
            `env.client.set_limiter(...)` changes them. A rate limit's bucket moves with the
            skipping clock, so a test of "50/s" takes no real second.

    Attributes:
        client: a `Client` of the environment: `start_workflow`, `run_workflow`, `send_event`,
            `query`, `cancel_run`, `describe`, `get_workflow_handle`, `get_history`,
            `list_workflows`; its handles' `result()` lets the clock skip ahead.
        clock: the `VirtualClock` (its `time()` is what steps see as now).
        crashes: how many simulated crashes happened (`crash_next_step`).
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        *,
        partitions: int = 1,
        start_time: datetime | None = None,
        codec: CodecRegistry | None = None,
        retention: timedelta | None = None,
        max_concurrent_steps: int = 100,
        sources: Iterable[Source] = (),
        task_handlers: Mapping[str, Callable[[Any], Awaitable[Any]]] | None = None,
        limiters: Iterable[Limiter] = (),
    ) -> None:
        self._served = WorkflowSet(list(workflows))
        self._limiters = list(limiters)
        for lim in self._limiters:
            if not isinstance(lim, Limiter):
                raise InvalidArgumentError(f"{lim!r} is not a Limiter", argument="limiters")
        #: Remote tasks (`ctx.remote_task`) answered in process, by task name, whatever the queue.
        self._task_handlers = dict(task_handlers or {})
        self._task_positions: dict[str, int] = {}
        self._sources = list(sources)
        for src in self._sources:
            if not isinstance(src, Source):
                raise InvalidArgumentError(f"{src!r} is not a Source", argument="sources")
            if src.uses_registry:
                raise InvalidArgumentError(
                    f"source {src.topic!r} uses the schema registry format {src.format!r}, which the in-process "
                    "environment does not have: test it with grctl_kafka_env",
                    argument="sources",
                )
        if self._served.problems:
            raise RegistrationError("; ".join(self._served.problems))
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise InvalidArgumentError(f"partitions must be an int >= 1, got {partitions!r}", argument="partitions")
        if start_time is not None and start_time.tzinfo is None:
            raise InvalidArgumentError("start_time must be an aware datetime (e.g. tzinfo=UTC)", argument="start_time")
        if retention is not None and (not isinstance(retention, timedelta) or retention <= timedelta(0)):
            raise InvalidArgumentError(f"retention must be a positive timedelta, got {retention!r}",
                                       argument="retention")  # fmt: skip
        self._partitions = partitions
        # Whole seconds by default: durable timers are kept in ms, and readable times help tests.
        self._start_time = start_time.timestamp() if start_time is not None else float(int(time.time()))
        self._codec = codec or default_codec()
        self._retention = retention
        self._max_steps = max_concurrent_steps
        self.worker_id = f"w_inprocess.{secrets.token_hex(1)}"
        self.clock = VirtualClock(self._start_time, self._touched)
        self.crashes = 0
        self._crash_armed = False
        self._crash: asyncio.Task[None] | None = None
        self._activity = 0  # bumped by everything that may let something else happen
        self._seen = 0  # the activity count the loop last saw settled
        self._wake: asyncio.Event | None = None
        self._skipping = 0  # `skipping()` blocks in progress
        #: The outcomes `result()` calls wait for: the clock may skip while one is not settled
        #: (settled as the outcome is delivered, before the waiting test runs on).
        self._awaited: list[asyncio.Future[Any]] = []
        self._sleep_until: float | None = None
        self._settled: asyncio.Event | None = None
        self._driver: asyncio.Task[None] | None = None
        self._dir: Path | None = None
        self._stores: dict[int, PartitionStore] = {}
        self._procs: dict[int, _Processor] = {}
        self._source_parts: dict[str, SourcePartition] = {}
        self._ios: dict[str, InProcessClientIO] = {}
        self._failure: BaseException | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the partitions (RocksDB in a temporary folder) and start the environment's loop."""
        if self._started:
            raise TestEnvironmentError("this WorkflowEnvironment was started already; make a new one for each test")
        self._started = True
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        conn = Connection("in-process", NAMESPACE)
        conn.num_partitions = self._partitions
        self.connection = conn
        self.topics = Topics(on_append=self._appended)
        catalog = ServedCatalog(self._served)
        if self._retention is not None:
            catalog.settings.run_retention_ms = int(self._retention.total_seconds() * 1000)
        self._machine = Machine(catalog, self.worker_id)
        self._tasks = PartitionTasks()
        self._executor = StepExecutor(
            served=self._served, codec=self._codec, worker_id=self.worker_id,
            max_concurrent_steps=self._max_steps, tasks=self._tasks, emit_topics=AnyTopic(), clock=self.clock,
        )  # fmt: skip
        self._queries = QueryAnswerer(served=self._served, codec=self._codec, tasks=self._tasks)
        self._dir = Path(tempfile.mkdtemp(prefix="grctl-testenv-"))
        self._memory = StoreMemory(64 * 2**20)
        for p in range(self._partitions):
            self._stores[p] = PartitionStore(self._dir / str(p), memory=self._memory)
        self._open_session(positions={})
        self._driver = asyncio.create_task(self._drive(), name="grctl-testenv")
        self.client = self._new_client()
        for lim in self._limiters:
            spec = lim.spec()
            await self.client.set_limiter(
                lim.name, concurrency=spec.concurrency, rate=lim.rate, burst=spec.burst, per_key=spec.per_key,
                weights=dict(spec.weights),
            )  # fmt: skip

    async def stop(self) -> None:
        """Stop the loop, cancel running steps, close the stores and remove their folder."""
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        if self._crash is not None and not self._crash.done():
            self._crash.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._crash
        for proc in self._procs.values():
            proc.close()
        await self._tasks.drain(None, 5.0, cancel=True)
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _open_session(self, positions: dict[Any, int]) -> None:
        """Processors over the stores, as a worker session opens its partitions; due steps start."""
        self._committer = GroupCommitter(InProcessPublisher(self.topics, self.connection.topics.state))
        services = ProcessorServices(
            outbox=_Outbox(self._committer, self._touched),
            machine=self._machine,
            topics=self.connection.topics,
            num_partitions=self._partitions,
            worker_id=self.worker_id,
            start_step=self._executor.start,
            answer_query=self._queries.spawn,
            timer_armed=lambda _due: self._touched(),
            limits=self.connection.limits,
            quarantine={},
            now_ms=self._now_ms,
        )
        self._procs = {}
        for p, store in self._stores.items():
            proc = _Processor(p, store, services)
            proc.env = self
            proc.position = positions.get(p)
            self._committer.attach(p, store, proc.low_watermark)
            self._procs[p] = proc
        self._source_parts = {}
        for src in self._sources:  # one partition each, routed as a worker's session routes them
            part = SourcePartition(
                src, 0, outbox=services.outbox, topics=self.connection.topics, num_partitions=self._partitions,
                codec=self._codec, limits=self.connection.limits, wf_types=frozenset(self._served.types()),
            )  # fmt: skip
            part.position = positions.get(("source", src.topic), 0)
            self._source_parts[src.topic] = part
        for proc in self._procs.values():
            proc.start()

    def _new_client(self) -> InProcessClient:
        return InProcessClient(
            self.connection,
            self._codec,
            self._client_io,
            lambda part: self.topics.log(self.connection.topics.history, part),
            _handle_class(self),
        )

    def new_client(self) -> InProcessClient:
        """Another client of the environment (a second process's, say)."""
        self._check_started()
        return self._new_client()

    def _client_io(self, client_id: str) -> InProcessClientIO:
        io = InProcessClientIO(
            self.connection, client_id, partition_for(client_id, self._partitions), self._client_send
        )
        self._ios[client_id] = io
        return io

    def _client_send(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.topics.append(topic, partition, key, value)

    def _appended(self, topic: str, _partition: int, rec: Record) -> None:
        if topic == self.connection.topics.replies and rec.key_bytes is not None:
            io = self._ios.get(rec.key_bytes.decode())
            if io is not None:
                io.deliver(rec)
        self._touched()

    def _check_started(self) -> None:
        if not self._started or self._dir is None:
            raise TestEnvironmentError(
                "the WorkflowEnvironment is not running: use `async with WorkflowEnvironment(...) as env:` "
                "(or await env.start() first), and nothing of it after env.stop()"
            )

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _touched(self) -> None:
        self._activity += 1
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ what tests call

    def now(self) -> datetime:
        """The environment's current time (what `ctx.now()` would record)."""
        return datetime.fromtimestamp(self.clock.time(), UTC)

    async def sleep(self, duration: timedelta | float) -> None:
        """Move the clock `duration` on, firing everything that falls due on the way, then wait until nothing moves.

        Args:
            duration: a timedelta, or seconds.
        """
        self._check_started()
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise InvalidArgumentError(f"env.sleep() takes a duration >= 0, got {duration!r}", argument="duration")
        target = self.clock.time() + seconds
        self._sleep_until = target if self._sleep_until is None else max(self._sleep_until, target)
        try:
            while self.clock.time() < target or not self._is_idle():
                await self._round_done()
        finally:
            if self._sleep_until is not None and self._sleep_until <= self.clock.time():
                self._sleep_until = None

    async def settle(self) -> None:
        """Wait until nothing can happen without the clock moving (inputs applied, steps waiting or done)."""
        self._check_started()
        while not self._is_idle():
            await self._round_done()

    def crash_next_step(self) -> None:
        """Make the next step that finishes crash the worker before its outcome commits (see the module docstring)."""
        self._check_started()
        self._crash_armed = True

    async def history(self, wf_id: str, run_id: str | None = None) -> list[HistoryEvent]:
        """The history of the latest run of `wf_id` (or of `run_id`): `env.client.get_history`."""
        return await self.client.get_history(wf_id, run_id)

    def produce(
        self, topic: str, value: Any, key: bytes | str | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> Record:
        """Write a record to a source's topic (what another producer would do); the source routes it.

        Args:
            topic: the topic of one of the environment's `sources`.
            value: bytes as they are, a str as UTF-8, anything else as JSON.
            key: the record's key (a str as UTF-8).
            headers: the record's headers.
        """
        self._check_started()
        if topic not in self._source_parts:
            raise InvalidArgumentError(
                f"topic {topic!r} is not the topic of a source of this environment "
                f"(sources: {sorted(self._source_parts) or 'none'})",
                argument="topic",
            )
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode()
        else:
            data = json.dumps(value).encode()
        raw_key = key.encode() if isinstance(key, str) else key
        return self.topics.append(topic, 0, raw_key, data, headers)

    def emitted(self, topic: str) -> list[Record]:
        """The records steps emitted to `topic` (`ctx.emit`, a workflow's results topic), in commit order."""
        return self.topics.of_topic(topic)

    @contextlib.contextmanager
    def skipping(self) -> Iterator[None]:
        """Let the clock skip ahead while this block runs (as while `result()` is awaited)."""
        self._skipping += 1
        self._touched()
        try:
            yield
        finally:
            self._skipping -= 1

    # ------------------------------------------------------------------ the loop

    async def _round_done(self) -> None:
        assert self._settled is not None
        self._settled.clear()
        self._touched()
        await self._settled.wait()
        if self._failure is not None:
            raise self._failure

    async def _drive(self) -> None:
        assert self._wake is not None and self._settled is not None
        try:
            while True:
                await self._settle_round()
                if self._is_idle() and self._may_skip() and self._skip():
                    continue
                self._settled.set()
                if self._activity == self._seen:
                    self._wake.clear()
                    await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug in the engine or here: every waiter gets it
            self._failure = exc
            self._settled.set()
            cause = KafkaSetupError(f"grctl's in-process test environment stopped: {type(exc).__name__}: {exc}")
            cause.__cause__ = exc
            for io in self._ios.values():
                io.fail(cause)  # pending requests and results fail instead of waiting forever
            raise

    async def _settle_round(self) -> None:
        """Apply inputs, fire due timers, commit, let steps run; until nothing moves."""
        while True:
            before = self._activity
            if self._crash is not None:
                crash, self._crash = self._crash, None
                await crash
            for topic, part in self._source_parts.items():
                log = self.topics.log(topic, 0)
                while (part.position or 0) < len(log):
                    part.on_record(log[part.position or 0])  # type: ignore[arg-type]  # a Message's parts
            if self._task_handlers:
                await self._answer_remote_tasks()
            now = self._now_ms()
            for p, proc in list(self._procs.items()):
                log = self.topics.log(self.connection.topics.directives, p)
                while (proc.position or 0) < len(log) and not proc.closing:
                    proc.on_record(log[proc.position or 0])  # type: ignore[arg-type]  # a Message's parts
                proc.fire_due_timers(now, FIRE_LIMIT)
                proc.fire_due_expiries(now, FIRE_LIMIT)
            await self._committer.flush()
            for _ in range(SETTLE_YIELDS):
                await asyncio.sleep(0)
            if self._activity == before and self._crash is None:
                self._seen = self._activity
                return

    async def _answer_remote_tasks(self) -> None:
        """Run the requests committed to task queue topics by `task_handlers`; answer on directives."""
        prefix = self.connection.topics.task_queue("x")[:-1]
        for (topic, part), log in list(self.topics.logs.items()):
            if not topic.startswith(prefix):
                continue
            key = f"{topic}/{part}"
            while self._task_positions.get(key, 0) < len(log):
                rec = log[self._task_positions.get(key, 0)]
                self._task_positions[key] = self._task_positions.get(key, 0) + 1
                req = json.loads(rec.value())
                if req.get("type") != "task_request":
                    continue
                answer: dict[str, Any] = {
                    "t": "task_result", "wf_id": req["wf_id"], "run_id": req["run_id"], "task_id": req["task_id"],
                    "attempt": req["attempt"], "worker": self.worker_id,
                }  # fmt: skip
                handler = self._task_handlers.get(req["task"])
                if handler is None:
                    why = f"no task handler {req['task']!r} (task_handlers: {sorted(self._task_handlers)})"
                    answer.update(ok=False, error={"type": "UnknownTask", "retryable": False, "message": why})
                else:
                    try:
                        answer["result"] = await handler(req["payload"])
                    except Exception as exc:  # noqa: BLE001  # the handler's error fails the attempt
                        retryable = type(exc).__name__ != "NonRetryableError"
                        answer.update(ok=False, error={"type": type(exc).__name__, "message": str(exc),
                                                       "retryable": retryable})  # fmt: skip
                directives = req.get("reply_topic") or self.connection.topics.directives
                self.topics.append(directives, int(req.get("reply_partition", 0)), req["wf_id"].encode(),
                                   json.dumps(answer).encode())  # fmt: skip

    def _may_skip(self) -> bool:
        if self._awaited:
            self._awaited = [fut for fut in self._awaited if not fut.done()]
        return (
            self._skipping > 0
            or bool(self._awaited)
            or (self._sleep_until is not None and self.clock.time() < self._sleep_until)
        )

    @contextlib.contextmanager
    def _awaiting(self, fut: asyncio.Future[Any]) -> Iterator[None]:
        self._awaited.append(fut)
        self._touched()
        try:
            yield
        finally:
            if fut in self._awaited:
                self._awaited.remove(fut)

    def _is_idle(self) -> bool:
        """Nothing can happen unless the clock moves."""
        if self._crash is not None or self._committer.pending_records:
            return False
        for topic, part in self._source_parts.items():
            if (part.position or 0) < len(self.topics.log(topic, 0)):
                return False
        directives = self.connection.topics.directives
        for p, proc in self._procs.items():
            if (proc.position or 0) < len(self.topics.log(directives, p)):
                return False
        waiting = self.clock.sleepers + sum(
            1 for proc in self._procs.values() for futs in proc.child_waiters.values() for f in futs if not f.done()
        )
        return len(self._tasks.running()) <= waiting

    def _skip(self) -> bool:
        """Move the clock to the next thing due (within `env.sleep`'s target); False if nothing is due."""
        due = [self.clock.next_due(), *(self._next_durable_timer(proc) for proc in self._procs.values())]
        candidates = [d for d in due if d is not None]
        limit = None if self._skipping > 0 or self._awaited else self._sleep_until
        if not candidates:
            if limit is None or limit <= self.clock.time():
                return False
            self.clock.advance(limit)
            return True
        target = max(min(candidates), self.clock.time())
        if limit is not None and target > limit:
            target = limit
        if target <= self.clock.time() and not (self.clock.next_due() or float("inf")) <= target:
            return False  # what is due now is not ours to fire (a durable timer fires in the round)
        self.clock.advance(target)
        return True

    @staticmethod
    def _next_durable_timer(proc: PartitionProcessor) -> float | None:
        """The earliest durable timer of a partition, in seconds (on disk too, beyond the loaded horizon)."""
        first: float | None = None
        for table in (keys.TIMER_PREFIX, keys.EXPIRY_PREFIX):
            for _key, raw in proc.store.scan(table):
                due = timer_decoder.decode(raw).due_ms / 1000
                first = due if first is None else min(first, due)
                break
        return first

    async def _restart(self, what: str) -> None:
        """The worker crashed (`crash_next_step`): commit what the step journaled, lose the rest, reopen."""
        await self._committer.flush()  # the step's journal and history committed while it ran
        positions: dict[Any, int] = {p: proc.position for p, proc in self._procs.items() if proc.position is not None}
        for topic, part in self._source_parts.items():
            positions[("source", topic)] = part.position or 0
        for proc in self._procs.values():
            proc.close()
        await self._tasks.drain(None, 5.0, cancel=True)
        for store in self._stores.values():
            store.drop_uncommitted()
        self.crashes += 1
        self._open_session(positions)
        self._touched()


def _handle_class(env: WorkflowEnvironment) -> type[WorkflowHandle]:
    class EnvHandle(WorkflowHandle):
        """A handle whose `result()` lets the environment's clock skip ahead while it waits."""

        async def result(self, timeout: float | None = None, return_type: type | None = None) -> Any:
            with env._awaiting(self.future):
                return await super().result(timeout, return_type)

    return EnvHandle
