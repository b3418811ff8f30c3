"""What the web UI reads and does, behind one small class each: `TopicsReader` and `RunActions`.

`TopicsReader` reads the namespace straight from its topics, with the readers the CLI uses too
(`grctl.client.reader`, `grctl.client.namespace`): runs from the `state` changelog, history by
time seek, a run's store and inbox from its `state` partition since the run began, dead letters
from the end of the `dead-letter` topic, and the workers' group and lag with the admin client. Its methods block
(Kafka consumers): the app calls them in a thread. Issue 14 replaces the run listing with
worker-side listing: a class with the same methods (`RunsSource`) swaps in through
`grctl.ui.app.create_app`.

`RunActions` sends events, cancels and terminates through a `Client`, pauses, resumes and triggers
schedules, and changes a limiter's limits.

Schedules, limiters and a waiting run's place in a limiter's line are known only to the workers
that keep them: those reads ask them through a `Client` of their own.

May import: errors, defaults, settings, models, codec, engine, kafka, client, display, logging_setup
(never the CLI).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from ulid import ULID

from grctl.client.client import HISTORY_SEEK_SLACK_MS, Client
from grctl.client.limiters import LimiterDescription
from grctl.client.namespace import describe_namespace
from grctl.client.reader import (
    ALL_STATUSES,
    Page,
    RunFilter,
    RunLister,
    RunRow,
    admin_for,
    find_run,
    iter_history,
    read_consumer,
)
from grctl.client.schedules import ScheduleDescription
from grctl.engine import keys
from grctl.engine.records import DECODE_ERRORS, InboxEntry, inbox_decoder
from grctl.errors import InvalidArgumentError
from grctl.kafka.connection import Connection
from grctl.kafka.offsets import earliest_offsets, latest_offsets, offsets_for_time
from grctl.kafka.partitioner import partition_for
from grctl.kafka.reading import read_partitions
from grctl.models.history import HistoryEvent
from grctl.models.limits import make_spec

#: Records a run page reads at most from the run's `state` partition (store, inbox).
STATE_READ_LIMIT = 200_000
#: How long one read of a partition may take.
STATE_READ_S = 10.0
#: Dead-letter records shown.
DEAD_LETTERS_SHOWN = 50
#: Runs per page.
PAGE_SIZE = 25
#: The largest limit the limiter form accepts (a limit is a 64-bit integer on the wire; no real
#: downstream allows a billion calls in flight).
MAX_FORM_LIMIT = 1_000_000_000
#: The fields of the limiter form, with what each is called in its errors.
LIMIT_FIELDS = {"concurrency": "concurrency", "rate": "rate", "burst": "burst", "per_key": "per-key concurrency"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, with why it was put there."""

    partition: int
    offset: int
    ts_ms: int
    key: str
    reason: str
    source: str  # "<topic>[<partition>]@<offset>" of the original record
    size: int


@dataclass(slots=True)
class RunState:
    """A run's store and the events waiting in its inbox, read from its `state` partition."""

    store: dict[str, Any] = field(default_factory=dict)
    inbox: list[InboxEntry] = field(default_factory=list)
    complete: bool = True  # False: the read stopped at STATE_READ_LIMIT or STATE_READ_S


class RunsSource(Protocol):
    """Everything the UI reads (see `TopicsReader`)."""

    conn: Connection

    def namespace(self) -> dict[str, Any]:
        """Partitions, owners, lag (as `grctl namespace describe --json`)."""
        ...

    def dead_letters(self, limit: int = DEAD_LETTERS_SHOWN) -> list[DeadLetter]:
        """The latest dead-letter records, newest first."""
        ...

    def runs(self, flt: RunFilter, limit: int) -> Page:
        """One page of runs, most recently changed first."""
        ...

    def versions(self) -> Page:
        """The drain counts (`Page.versions`), from the workers' run indexes."""
        ...

    def run(self, wf_id: str) -> RunRow:
        """The latest run of `wf_id` (raises `WorkflowNotFoundError`)."""
        ...

    def history(self, wf_id: str, run_id: str) -> list[HistoryEvent]:
        """Every history event of one run, in order."""
        ...

    def state(self, wf_id: str, run_id: str) -> RunState:
        """The run's store and inbox."""
        ...

    def schedules(self) -> list[ScheduleDescription]:
        """Every schedule, from the workers that own them."""
        ...

    def limiters(self) -> list[LimiterDescription]:
        """Every limiter, from the workers that keep them."""
        ...

    def limiter(self, name: str) -> LimiterDescription:
        """Limiter `name` with its queue (raises `LimiterNotFoundError`)."""
        ...

    def permits(self, wf_id: str) -> dict[str, Any] | None:
        """The run's permits as its worker describes them, with its place in the limiter's line."""
        ...


def parse_filter(
    wf_type: str | None, status: str | None, text: str | None, cursor: str | None, since: str | None = None
) -> RunFilter:
    """The runs filter of the list page's query parameters.

    Raises:
        InvalidArgumentError: an unknown status, a page token that is not one, or a bad `since`.
    """
    statuses = {s.strip() for s in (status or "").split(",") if s.strip()}
    unknown = sorted(statuses - set(ALL_STATUSES))
    if unknown:
        raise InvalidArgumentError(
            f"unknown status {', '.join(map(repr, unknown))}: use one of {', '.join(ALL_STATUSES)}", argument="status"
        )
    since_ms = None
    if since:
        try:
            hours = float(since)
        except ValueError:
            raise InvalidArgumentError(f"since={since!r} is not a number of hours", argument="since") from None
        if hours <= 0:
            raise InvalidArgumentError(f"since={since!r} must be a positive number of hours", argument="since")
        since_ms = int(time.time() * 1000 - hours * 3_600_000)
    return RunFilter(
        types={wf_type.strip()} if wf_type and wf_type.strip() else None,
        statuses=statuses or None,
        text=text.strip() if text and text.strip() else None,
        since_ms=since_ms,
        page_token=cursor or None,
    )


def parse_limit_form(form: dict[str, str]) -> dict[str, Any]:
    """The limits of the limiter form (`concurrency`, `rate`, `burst`, `per_key`) as `set_limiter` arguments.

    An empty field is no limit of that kind.

    Raises:
        InvalidArgumentError: a number that is not a whole number from 1 to `MAX_FORM_LIMIT`, a
            malformed rate, a burst without a rate, or no limit at all.
    """
    out: dict[str, Any] = {}
    for name, label in LIMIT_FIELDS.items():
        text = form.get(name, "").strip()
        if not text:
            out[name] = None
        elif name == "rate":
            out[name] = text
        elif not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_FORM_LIMIT:
            raise InvalidArgumentError(
                f"{label} must be a whole number from 1 to {MAX_FORM_LIMIT:,} (or empty for no {label} limit), "
                f"got {text!r}",
                argument=name,
            )
        else:
            out[name] = int(text)
    spec = make_spec(**out)  # the checks the client makes, before anything is sent
    if spec.rate_n is not None and spec.rate_n > MAX_FORM_LIMIT:
        raise InvalidArgumentError(f"a rate grants at most {MAX_FORM_LIMIT:,} permits per period, got {out['rate']!r}")
    return out


class TopicsReader:
    """Reads a namespace from its topics (see the module docstring).

    Args:
        conn: the connection (namespace included).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lister: RunLister | None = None

    def namespace(self) -> dict[str, Any]:
        """Partitions, owners, lag (as `grctl namespace describe --json`)."""
        return describe_namespace(admin_for(self.conn), self.conn.topics, self.conn)

    def dead_letters(self, limit: int = DEAD_LETTERS_SHOWN) -> list[DeadLetter]:
        """The latest dead-letter records (up to `limit`), newest first."""
        topic = self.conn.topics.dead_letter
        parts = list(range(self.conn.num_partitions))
        admin = admin_for(self.conn)
        ends = latest_offsets(admin, topic, parts)
        starts = earliest_offsets(admin, topic, parts)
        out: list[DeadLetter] = []
        for p in parts:
            if ends[p] <= starts[p]:
                continue
            records, _ = self._read(topic, p, max(starts[p], ends[p] - limit), ends[p], limit)
            for m in records:
                headers = {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}
                source = f"{headers.get('grctl.topic', '?')}[{headers.get('grctl.partition', '?')}]"
                out.append(
                    DeadLetter(
                        partition=p,
                        offset=m.offset() or 0,
                        ts_ms=m.timestamp()[1],
                        key=(m.key() or b"").decode(errors="replace"),
                        reason=headers.get("grctl.reason", "(no reason header)"),
                        source=f"{source}@{headers.get('grctl.offset', '?')}",
                        size=len(m.value() or b""),
                    )
                )
        out.sort(key=lambda d: d.ts_ms, reverse=True)
        return out[:limit]

    def _read(self, topic: str, partition: int, start: int, end: int, limit: int) -> tuple[list[Any], bool]:
        """Records [start, end) of one partition (at most `limit`, within STATE_READ_S).

        Returns:
            The records, and whether the read got to `end` (False: it stopped at a bound).
        """
        c = read_consumer(self.conn, "ui")
        got: list[Any] = []
        try:
            for m in read_partitions(c, topic, {partition: (start, end)}, timeout=STATE_READ_S, skip_errors=True):
                got.append(m)
                if len(got) >= limit:
                    return got, (m.offset() or 0) >= end - 1
        except TimeoutError:
            return got, False
        finally:
            c.close()
        return got, True

    def runs(self, flt: RunFilter, limit: int) -> Page:
        """One page of runs, newest first, from the workers' run indexes."""
        if self._lister is None:
            self._lister = RunLister(self.conn)
        return self._lister.page(flt, limit)

    def schedules(self) -> list[ScheduleDescription]:
        """Every schedule, from the workers that own them (a client of its own, for this read)."""

        async def read() -> list[ScheduleDescription]:
            async with Client(self.conn) as client:
                return await client.list_schedules()

        return asyncio.run(read())

    def limiters(self) -> list[LimiterDescription]:
        """Every limiter, by name, from the workers that keep them (a client of its own, for this read)."""

        async def read() -> list[LimiterDescription]:
            async with Client(self.conn) as client:
                return await client.list_limiters()

        return asyncio.run(read())

    def limiter(self, name: str) -> LimiterDescription:
        """Limiter `name` with its queue (raises `LimiterNotFoundError`)."""

        async def read() -> LimiterDescription:
            async with Client(self.conn) as client:
                return await client.describe_limiter(name)

        return asyncio.run(read())

    def permits(self, wf_id: str) -> dict[str, Any] | None:
        """The run's permits as its worker describes them, with `waiting_for.position` (its place in line).

        Raises:
            NoWorkerAnsweredError: no worker answered for the run's partition.
        """

        async def read() -> dict[str, Any] | None:
            async with Client(self.conn) as client:
                return (await client.describe(wf_id)).permits

        return asyncio.run(read())

    def versions(self) -> Page:
        """The drain counts (`Page.versions`), from the workers' run indexes."""
        if self._lister is None:
            self._lister = RunLister(self.conn)
        return self._lister.page(RunFilter(), 1, counts=True)

    def run(self, wf_id: str) -> RunRow:
        """The latest run of `wf_id` (raises `WorkflowNotFoundError`)."""
        return find_run(self.conn, wf_id)

    def history(self, wf_id: str, run_id: str) -> list[HistoryEvent]:
        """Every history event of one run, in order."""
        return list(iter_history(self.conn, wf_id, run_id, timeout=STATE_READ_S))

    def state(self, wf_id: str, run_id: str) -> RunState:
        """The run's store and inbox: the latest value of each of its keys since the run began."""
        topic = self.conn.topics.state
        p = partition_for(wf_id, self.conn.num_partitions)
        since = max(0, ULID.from_str(run_id).milliseconds - HISTORY_SEEK_SLACK_MS)
        admin = admin_for(self.conn)
        start = offsets_for_time(admin, topic, [p], since)[p]
        end = latest_offsets(admin, topic, [p])[p]
        state = RunState()
        if start < 0 or start >= end:
            return state
        store_prefix = keys.store_key(wf_id, run_id, "")
        inbox_prefix = keys.INBOX_PREFIX + wf_id.encode() + keys.SEP
        latest: dict[bytes, bytes | None] = {}
        records, state.complete = self._read(topic, p, start, end, STATE_READ_LIMIT)
        for m in records:
            key = m.key() or b""
            if key.startswith((store_prefix, inbox_prefix)):
                latest[key] = m.value()
        for key, value in sorted(latest.items()):
            if value is None:
                continue  # deleted (an event taken from the inbox)
            if key.startswith(store_prefix):
                try:
                    decoded: Any = msgspec.msgpack.decode(value)
                except DECODE_ERRORS:
                    decoded = f"<{len(value)} bytes of a custom codec>"
                state.store[key[len(store_prefix) :].decode(errors="replace")] = decoded
            else:
                state.inbox.append(inbox_decoder.decode(value))
        return state


class RunActions:
    """Send an event, cancel or terminate a run, through a `Client`.

    Args:
        client: the client of the namespace.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    async def send_event(self, wf_id: str, event: str, payload: Any, identity: str | None = None) -> None:
        """Deliver an event (raises `WorkflowError` if the run ended or has no such handler).

        `identity` (the signed-in user; default: the client's) is recorded with it.
        """
        await self.client.send_event(wf_id, event, payload, identity=identity)

    async def cancel(self, wf_id: str, reason: str | None, identity: str | None = None) -> None:
        """Cancel the latest run (raises `WorkflowError` if it ended)."""
        await self.client.cancel_run(wf_id, reason, identity=identity)

    async def terminate(self, wf_id: str, reason: str | None, identity: str | None = None) -> None:
        """Terminate the latest run (raises `WorkflowError` if it ended)."""
        await self.client.cancel_run(wf_id, reason, terminate=True, identity=identity)

    async def schedule(self, schedule_id: str, action: str, note: str = "", identity: str | None = None) -> str:
        """Pause (with a note), resume or trigger a schedule; returns what was done, in words.

        Raises:
            ScheduleNotFoundError: no schedule has that id.
            InvalidArgumentError: an action other than pause, resume or trigger.
        """
        handle = self.client.get_schedule_handle(schedule_id)
        if action == "pause":
            await handle.pause(note, identity=identity)
            return f"{schedule_id} paused" + (f": {note}" if note else "")
        if action == "resume":
            await handle.resume(note, identity=identity)
            return f"{schedule_id} resumed"
        if action == "trigger":
            fired = await handle.trigger(identity=identity)
            run = fired.get("run_wf_id")
            return f"{schedule_id} triggered: {fired.get('action')}" + (f", run {run}" if run else "")
        raise InvalidArgumentError(
            f"{action!r} is not a schedule action: use pause, resume or trigger", argument="action"
        )

    async def set_limits(self, name: str, limits: dict[str, Any], identity: str | None = None) -> LimiterDescription:
        """Set the limits of an existing limiter (`parse_limit_form`'s), keeping its fairness weights.

        Raises:
            LimiterNotFoundError: no limiter has that name (the UI changes limiters, it does not create them).
            InvalidArgumentError: limits the limiter refuses.
        """
        current = await self.client.describe_limiter(name)
        return await self.client.set_limiter(name, **limits, weights=dict(current.spec.weights), identity=identity)
