"""`Client`: start runs, wait for results, read history, send events, cancel and terminate."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from confluent_kafka import TopicPartition
from ulid import ULID

from grctl import defaults, tracing
from grctl._check import non_empty_str, positive_ms
from grctl._fork import ForkGuard
from grctl.client._io import ClientIO
from grctl.client.limiters import LimiterDescription, record_of
from grctl.client.limiters import raise_for as raise_limiter_refusal
from grctl.client.listing import (
    LIST_LIMIT_MAX,
    ListFilter,
    RunPage,
    VersionCount,
    decode_page_token,
    encode_page_token,
    merge_counts,
    merge_pages,
    merge_versions,
)
from grctl.client.schedules import (
    Duration,
    ScheduleDescription,
    ScheduleHandle,
    build_spec,
    catchup_ms,
    overlap_policy,
)
from grctl.client.schedules import raise_for as raise_schedule_refusal
from grctl.codec import CodecRegistry, default_codec
from grctl.engine.records import (
    DECODE_ERRORS,
    CancelCmd,
    DescribeCmd,
    EventCmd,
    HistoryRecord,
    LimiterDeleteCmd,
    LimiterDescribeCmd,
    LimiterListCmd,
    LimiterSetCmd,
    ListCmd,
    OverlapPolicy,
    QueryCmd,
    Reply,
    ReplyCode,
    ReplyTo,
    ScheduleCreateCmd,
    ScheduleListCmd,
    StartCmd,
    WatchCmd,
    encoder,
    history_decoder,
    schedule_decoder,
)
from grctl.engine.schedule_spec import CalendarSpec
from grctl.engine.schedules import check_create
from grctl.errors import (
    InvalidArgumentError,
    NoWorkerAnsweredError,
    PayloadTooLargeError,
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTypeNotRegisteredError,
)
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.kafka.reading import read_partitions, reading_consumer
from grctl.kafka.retry import retry_while_leaderless
from grctl.models.history import PAYLOAD_TYPES, HistoryEvent, HistoryKind
from grctl.models.limits import Limit, check_name, check_priority, make_spec
from grctl.models.run_info import RunInfo, RunStatus
from grctl.settings import EngineSettings
from grctl.workflow.handle import WorkflowHandle

START_ACK_TIMEOUT_S = defaults.START_ACK_TIMEOUT_S
REQUEST_TIMEOUT_S = defaults.REQUEST_TIMEOUT_S
#: History seeks start this long before a run's id timestamp (clock skew between hosts).
HISTORY_SEEK_SLACK_MS = 60_000
#: `get_history` returns what it read of the run's partition by then.
HISTORY_READ_TIMEOUT_S = 60.0

logger = logging.getLogger("grctl.client")


def to_history_event(rec: HistoryRecord, partition: int = -1, offset: int = -1) -> HistoryEvent:
    """Turn a wire history record into a typed `HistoryEvent`."""
    try:
        kind = HistoryKind(rec.kind)
    except ValueError:
        kind = rec.kind  # type: ignore[assignment]  # a kind from a newer version: keep the string
    msg: Any = rec.msg
    payload_type = PAYLOAD_TYPES.get(kind) if isinstance(kind, HistoryKind) else None
    if payload_type is not None and rec.msg is not None:
        try:
            msg = msgspec.convert(rec.msg, payload_type, strict=False)
        except (msgspec.ValidationError, TypeError):
            msg = rec.msg
    return HistoryEvent(
        wf_id=rec.wf_id,
        run_id=rec.run_id,
        kind=kind,
        msg=msg,
        timestamp=datetime.fromtimestamp(rec.ts_ms / 1000, UTC),
        worker_id=rec.worker_id,
        operation_id=rec.op,
        partition=partition,
        offset=offset,
    )


def run_info_from_reply(payload: dict[str, Any]) -> RunInfo:
    """Build a `RunInfo` from a describe answer."""

    def ts(ms: int | None) -> datetime | None:
        return datetime.fromtimestamp(ms / 1000, UTC) if ms else None

    parent = payload.get("parent") or {}
    return RunInfo(
        id=payload["id"],
        wf_id=payload["wf_id"],
        wf_type=payload["wf_type"],
        status=RunStatus(payload["status"]),
        state=payload.get("state"),
        current_step=payload.get("current_step"),
        step_seq=payload.get("step_seq", 0),
        parent_wf_id=parent.get("wf_id"),
        parent_run_id=parent.get("run_id"),
        parent_wf_type=parent.get("wf_type"),
        parent_callback_step=parent.get("callback_step"),
        timeout=payload["timeout_ms"] / 1000 if payload.get("timeout_ms") else None,
        created_at=ts(payload.get("created_ms")),
        started_at=ts(payload.get("started_ms")),
        ended_at=ts(payload.get("ended_ms")),
        result=payload.get("result"),
        error=payload.get("error"),
        waiting_for_event=bool(payload.get("waiting")),
        wait_deadline=ts(payload.get("wait_due_ms")),
        pending_events=payload.get("pending_events", 0),
        schedule_id=payload.get("schedule_id"),
        scheduled_at=ts(payload.get("scheduled_ms")),
        version=payload.get("version", 1),
        awaiting=payload.get("awaiting"),
        remote_task=payload.get("remote_task"),
        started_by=payload.get("started_by"),
        cancel_by=payload.get("cancel_by"),
        priority=payload.get("priority", 3),
        permits=payload.get("permits"),
    )


#: The longest identity a client accepts (the engine keeps at most this much of one, too).
MAX_IDENTITY_CHARS = 200


def default_identity() -> str:
    """Who this process is, for the history of its operator actions: ``user@host/pid``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}/{os.getpid()}"


def check_identity(identity: str) -> str:
    """`identity` if it can be recorded.

    Raises:
        InvalidArgumentError: empty, over `MAX_IDENTITY_CHARS`, or with control characters.
    """
    if not isinstance(identity, str) or not identity.strip():
        raise InvalidArgumentError(f"identity must be a non-empty string, got {identity!r}", argument="identity")
    if len(identity) > MAX_IDENTITY_CHARS:
        raise InvalidArgumentError(
            f"identity is {len(identity)} characters; at most {MAX_IDENTITY_CHARS} are recorded: shorten it",
            argument="identity",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in identity):
        raise InvalidArgumentError(f"identity {identity!r} has control characters", argument="identity")
    return identity


#: Schedules per page of a partition's answer to `list_schedules` (a page stays far below a record's limit).
SCHEDULE_PAGE = 100


class Client:
    """Drives runs of one namespace. Talks only to Kafka.

    A client belongs to the process that made it: used in a process forked after it was made,
    every call raises `ForkedProcessError` (librdkafka clients do not survive `fork()`).

    Args:
        connection: the Kafka connection (namespace included).
        codec: converts inputs, event payloads and results.
        identity: who this client acts for, recorded in the history events of the runs it
            starts, signals, cancels and terminates (default ``user@host/pid``; at most
            200 characters).

    Raises:
        InvalidArgumentError: an empty or too long identity.
    """

    #: The class of the handles `start_workflow` and `get_workflow_handle` return (the test
    #: environment of `grctl.testing` uses one whose `result()` lets its clock skip ahead).
    handle_class: type[WorkflowHandle] = WorkflowHandle

    def __init__(
        self, connection: Connection, codec: CodecRegistry | None = None, *, identity: str | None = None
    ) -> None:
        self.identity = check_identity(identity) if identity is not None else default_identity()
        self._fork_guard = ForkGuard("Client")
        self.connection = connection
        self.codec = codec or default_codec()
        self.id = f"c_{secrets.token_hex(4)}@{socket.gethostname()}"
        self._io: ClientIO | None = None
        self._start_lock = asyncio.Lock()
        #: Seconds request/reply calls wait for the owning worker (GRCTL_REQUEST_TIMEOUT, default 15).
        self.request_timeout = EngineSettings.from_env().request_timeout

    async def _ensure(self) -> ClientIO:
        # Every call that reaches Kafka comes through here.
        self._fork_guard.check()
        if self._io is not None:
            return self._io
        async with self._start_lock:
            if self._io is None:
                conn = self.connection
                loop = asyncio.get_running_loop()
                if not conn.num_partitions:
                    await loop.run_in_executor(None, conn._setup, True, 10.0)
                io = ClientIO(conn, self.id, partition_for(self.id, conn.num_partitions))
                await loop.run_in_executor(None, io.start)
                self._io = io
        return self._io

    async def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Wait until a worker of the namespace is running (a member of its consumer group).

        Calls that need a worker fail at once with `NoWorkerAnsweredError` when none runs;
        a program that starts together with its workers waits here first.

        Raises:
            NoWorkerAnsweredError: no worker joined within `timeout` seconds.
        """
        io = await self._ensure()
        await io.wait_for_workers(timeout)

    async def close(self) -> None:
        """Release the client's Kafka handles."""
        self._fork_guard.check()
        if self._io is not None:
            io, self._io = self._io, None
            await asyncio.get_running_loop().run_in_executor(None, io.close)

    async def __aenter__(self) -> Client:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _partition(self, wf_id: str) -> int:
        return partition_for(wf_id, self.connection.num_partitions)

    def _encode(self, wf_id: str, cmd: Any, what: str | None = None, value: Any = None) -> bytes:
        """`cmd` encoded, after checking that the user value it carries (`what`) fits.

        Raises:
            PayloadTooLargeError: the value is over `Connection.limits.value_bytes`.
        """
        data = encoder.encode(cmd)
        limit = self.connection.limits.value_bytes
        if what is not None and len(data) > limit:
            size = len(encoder.encode(value))
            if size > limit:
                raise PayloadTooLargeError(what, size=size, limit=limit, wf_id=wf_id)
        return data

    async def _send(self, wf_id: str, data: bytes) -> None:
        io = await self._ensure()
        await io.send(self.connection.topics.directives, self._partition(wf_id), wf_id.encode(), data)

    def _identity(self, identity: str | None) -> str:
        """Who acts: `identity` if given (checked: `check_identity`), else this client's."""
        return check_identity(identity) if identity is not None else self.identity

    async def _request(
        self,
        wf_id: str,
        make: Any,
        timeout: float | None = None,
        what: str | None = None,
        value: Any = None,
        *,
        request_id: str | None = None,
        silence: str | None = None,
    ) -> Reply:
        """Send the directive `make(reply_to)` for `wf_id` and wait for its answer.

        Args:
            wf_id: the workflow id (its partition's owner answers).
            make: builds the directive from the `ReplyTo` to answer to.
            timeout: seconds to wait (default `request_timeout`).
            what: the user value the directive carries, for the size check (`_encode`).
            value: that value.
            request_id: the request's id (default: a new ULID).
            silence: what `NoWorkerAnsweredError` says when no answer comes.

        Raises:
            NoWorkerAnsweredError: no worker is in the namespace's group, or none answered.
            PayloadTooLargeError: the value is over the limit (nothing was sent).
        """
        io = await self._ensure()
        if timeout is None:
            timeout = self.request_timeout
        request_id = request_id or str(ULID())
        to = ReplyTo(client_id=self.id, request_id=request_id, partition=io.reply_partition)
        data = self._encode(wf_id, make(to), what, value)
        await io.require_workers()
        fut = io.expect_reply(request_id)
        try:
            await self._send(wf_id, data)
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise NoWorkerAnsweredError(
                silence
                or f"no worker of namespace {self.connection.namespace!r} answered within {timeout:.0f}s about "
                f"workflow id {wf_id!r}: are workers running (grctl worker --app ...)?",
                namespace=self.connection.namespace,
                timeout=timeout,
                wf_id=wf_id,
            ) from None
        finally:
            io.forget_reply(request_id)

    # ------------------------------------------------------------------ runs

    async def start_workflow(
        self,
        type: str,  # the original's parameter name
        id: str,  # the original's parameter name
        input: Any | None = None,  # the original's parameter name
        timeout: timedelta | None = None,
        return_type: type | None = None,
        *,
        version: int | None = None,
        priority: int | None = None,
    ) -> WorkflowHandle:
        """Start a run and wait until a worker accepted it.

        Args:
            type: the workflow type.
            id: the workflow id (unique among active runs).
            input: the start handler's input (dict → keyword arguments).
            timeout: the workflow timeout: the run is timed out (durably) after this long.
            return_type: convert the result to this type.
            version: the version of the type to run (default: the newest the owning worker
                serves). A version no worker owning the run serves starts, and waits with status
                awaiting_code until one does.
            priority: the run's priority for limiters, 1 (first) to 5 (last); default 3. Its
                children inherit it; `ctx.limit(..., priority=)` overrides it per request.

        Raises:
            WorkflowAlreadyRunningError: a run with this id is active.
            WorkflowTypeNotRegisteredError: no worker serves this type.
            WorkflowError: no worker answered in time.
        """
        non_empty_str(type, "type")
        non_empty_str(id, "id")
        timeout_ms = positive_ms(timeout, "timeout")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise InvalidArgumentError(f"version must be an integer >= 1, got {version!r}", argument="version")
        if priority is not None:
            check_priority(priority)
        io = await self._ensure()
        run_id = str(ULID())
        request_id = str(ULID())
        raw_input = self.codec.to_primitive(input)
        # The handle listens before the start is sent: the worker sends the run's outcome to
        # this client under the start's request id, in the transaction that ends the run.
        with tracing.start_span(type, id, run_id) as traceparent:
            handle = self.handle_class.attached(
                RunInfo(id=run_id, wf_id=id, wf_type=type, status=RunStatus.pending),
                client=self,
                listen=io.listen,
                watch_id=request_id,
                return_type=return_type,
            )
            try:
                reply = await self._request(
                    id,
                    lambda to: StartCmd(
                        wf_id=id, run_id=run_id, wf_type=type, input=raw_input, timeout_ms=timeout_ms, reply_to=to,
                        traceparent=traceparent, version=version, identity=self.identity, priority=priority,
                    ),
                    START_ACK_TIMEOUT_S,
                    "start input",
                    raw_input,
                    request_id=request_id,
                    silence=(
                        f"no worker of namespace {self.connection.namespace!r} accepted run {run_id} of {type!r} "
                        f"within {START_ACK_TIMEOUT_S:.0f}s; the start request is queued and runs when a worker "
                        f"serving {type!r} takes its partition"
                    ),
                )  # fmt: skip
            except BaseException:
                handle.discard()
                raise
        if not reply.ok:
            handle.discard()
            code, text = reply.code, reply.message or "start rejected"
            if code == ReplyCode.already_running:
                existing = (reply.payload or {}).get("existing_run_id")
                raise WorkflowAlreadyRunningError(text, wf_id=id, run_id=existing)
            if code == ReplyCode.type_not_registered:
                raise WorkflowTypeNotRegisteredError(text, wf_type=type, wf_id=id)
            raise WorkflowError(f"start_workflow failed ({code}): {text}", wf_id=id, run_id=run_id)
        acked = reply.payload.get("version") if isinstance(reply.payload, dict) else None
        handle.run_info.version = int(acked or version or 1)  # the version the run starts on
        if not handle.future.done():
            # A run whose start step ends at once may have settled the handle already.
            handle.run_info.status = RunStatus.running
        return handle

    async def run_workflow(
        self,
        type: str,
        id: str,
        input: Any | None = None,
        timeout: timedelta | None = None,
        return_type: type | None = None,
        *,
        version: int | None = None,
        priority: int | None = None,
    ) -> Any:
        """Start a run and wait for its result (the workflow timeout bounds the wait too)."""
        handle = await self.start_workflow(type, id, input, timeout, return_type, version=version, priority=priority)
        return await handle.result(timeout=timeout.total_seconds() if timeout else None)

    async def describe(self, wf_id: str) -> RunInfo:
        """The latest run of `wf_id`.

        Raises:
            WorkflowNotFoundError: no run has this workflow id.
        """
        reply = await self._request(wf_id, lambda to: DescribeCmd(wf_id=wf_id, reply_to=to))
        if not reply.ok:
            if reply.code == ReplyCode.not_found:
                raise WorkflowNotFoundError(f"workflow id {wf_id!r} not found", wf_id=wf_id)
            raise WorkflowError(f"describe failed ({reply.code}): {reply.message}")
        info = run_info_from_reply(reply.payload)
        waiting = (info.permits or {}).get("waiting_for")
        if waiting:
            # Its place in line is known to the limiter's partition: ask it (best effort).
            with contextlib.suppress(NoWorkerAnsweredError):
                limiter = str(waiting["limiter"])
                answer = await self._request(
                    limiter, lambda to: LimiterDescribeCmd(wf_id=limiter, reply_to=to, holder=waiting["holder"])
                )
                if answer.ok and isinstance(answer.payload, dict):
                    waiting["position"] = answer.payload.get("position")
        return info

    async def get_workflow_handle(self, wfid: str, return_type: type | None = None) -> WorkflowHandle:
        """A handle on the latest run of `wfid` (resolved at once if it already ended)."""
        io = await self._ensure()
        watch_id = str(ULID())
        io.expect_outcome(watch_id)  # the outcome may arrive right behind the answer
        try:
            reply = await self._request(wfid, lambda to: WatchCmd(wf_id=wfid, reply_to=to), request_id=watch_id)
        except BaseException:
            io.forget_outcome(watch_id)
            raise
        if not reply.ok:
            io.forget_outcome(watch_id)
            if reply.code == ReplyCode.not_found:
                raise WorkflowNotFoundError(f"workflow id {wfid!r} not found", wf_id=wfid)
            raise WorkflowError(f"get_workflow_handle failed ({reply.code}): {reply.message}", wf_id=wfid)
        info = run_info_from_reply(reply.payload)
        return self.handle_class.attached(
            info, client=self, listen=io.listen, watch_id=watch_id, return_type=return_type
        )

    async def list_workflows(
        self,
        status: str | RunStatus | Iterable[str | RunStatus] | None = None,
        workflow_type: str | Iterable[str] | None = None,
        started_after: datetime | None = None,
        limit: int = 50,
        page_token: str | None = None,
        *,
        text: str | None = None,
        counts: bool = False,
        timeout: float | None = None,
    ) -> RunPage:
        """A page of the namespace's runs (the latest run of each workflow id), newest first.

        Every partition's owner answers from its run index (no scan of the changelog); the
        pages are merged here. A partition that does not answer within `timeout` (moving in a
        rebalance) is listed in `RunPage.unavailable_partitions`.

        Args:
            status: only runs with this status (or any of these).
            workflow_type: only runs of this type (or any of these).
            started_after: only runs started after this (aware) time.
            limit: runs per page, 1 to 1000.
            page_token: `next_page_token` of the previous page (same filters).
            text: only runs whose workflow id, type or run id contains this text.
            counts: also count the runs of the namespace by status and type.
            timeout: seconds to wait for the partitions (default `request_timeout`).

        Raises:
            InvalidArgumentError: a bad filter, limit or page token (one of another namespace
                or of other filters).
            NoWorkerAnsweredError: the namespace has no running worker.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidArgumentError(
                f"limit must be an int from 1 to {LIST_LIMIT_MAX}, got {limit!r}", argument="limit"
            )
        flt = ListFilter.of(status, workflow_type, started_after, text)
        namespace = self.connection.namespace
        after = None
        if page_token is not None:
            after, flt = decode_page_token(page_token, namespace, flt)
        io = await self._ensure()
        await io.require_workers()
        wait_s = self.request_timeout if timeout is None else timeout
        base = str(ULID())
        waiting: dict[int, asyncio.Future[Reply]] = {}
        sends = []
        for p in range(self.connection.num_partitions):
            to = ReplyTo(client_id=self.id, request_id=f"{base}.{p}", partition=io.reply_partition)
            cmd = ListCmd(
                wf_id="", partition=p, reply_to=to, limit=limit, after=after, counts=counts,
                statuses=list(flt.statuses) if flt.statuses else None,
                wf_types=list(flt.wf_types) if flt.wf_types else None,
                started_after_ms=flt.started_after_ms, text=flt.text,
            )  # fmt: skip
            waiting[p] = io.expect_reply(to.request_id)
            sends.append(io.send(self.connection.topics.directives, p, b"", encoder.encode(cmd)))
        try:
            await asyncio.gather(*sends)
            await asyncio.wait(waiting.values(), timeout=wait_s)
        finally:
            for p in waiting:
                io.forget_reply(f"{base}.{p}")
        answers = {p: fut.result().payload for p, fut in waiting.items() if fut.done() and not fut.exception()}
        page, cursor, more = merge_pages(answers, limit)
        return RunPage(
            runs=[run_info_from_reply(info) for _pos, info in page],
            next_page_token=encode_page_token(namespace, flt, cursor) if more and cursor is not None else None,
            counts=merge_counts(answers.values()) if counts else None,
            unavailable_partitions=sorted(set(waiting) - set(answers)),
            versions=merge_versions(answers.values()) if counts else None,
        )

    async def workflow_versions(
        self, workflow_type: str | None = None, *, timeout: float | None = None
    ) -> list[VersionCount]:
        """The drain counts: per workflow type and version, the runs not ended, exact.

        "Order v1: 0 open" means no run needs the v1 code any more: it can be removed from the
        workers. A version once started stays listed with 0.

        Args:
            workflow_type: only this type.
            timeout: seconds to wait for the partitions (default `request_timeout`).

        Raises:
            WorkflowError: a partition did not answer (moving in a rebalance): the counts would
                be short; ask again.
            NoWorkerAnsweredError: the namespace has no running worker.
        """
        page = await self.list_workflows(workflow_type=workflow_type, limit=1, counts=True, timeout=timeout)
        if page.unavailable_partitions:
            raise WorkflowError(
                f"partitions {page.unavailable_partitions} did not answer (moving in a rebalance?): "
                "the drain counts would be short; ask again"
            )
        return [v for v in page.versions or [] if workflow_type is None or v.workflow_type == workflow_type]

    async def get_history(self, wf_id: str, run_id: str | None = None) -> list[HistoryEvent]:
        """Every history event of one run (the latest if `run_id` is None), in order.

        Seeks by time (the run id's ULID timestamp) instead of scanning the partition.
        """
        if run_id is None:
            info = await self.describe(wf_id)
            run_id = info.id
        await self._ensure()
        since_ms = ULID.from_str(run_id).milliseconds - HISTORY_SEEK_SLACK_MS
        part = self._partition(wf_id)
        return await asyncio.get_running_loop().run_in_executor(None, self._read_history, wf_id, run_id, part, since_ms)

    def _read_history(self, wf_id: str, run_id: str, part: int, since_ms: int) -> list[HistoryEvent]:
        conn = self.connection
        topic = conn.topics.history
        # No end-of-partition events: the read ends at the end offset taken first (position-based).
        consumer = reading_consumer(conn, "history-reader", **{"enable.partition.eof": False})
        out: list[HistoryEvent] = []
        try:
            # A leader moving (or a busy broker) answers NOT_LEADER for a moment: asked again.
            _low, high = retry_while_leaderless(
                lambda: consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10.0, cached=False),
                timeout=HISTORY_READ_TIMEOUT_S,
            )
            start = retry_while_leaderless(
                lambda: consumer.offsets_for_times([TopicPartition(topic, part, max(0, since_ms))], timeout=10.0),
                timeout=HISTORY_READ_TIMEOUT_S,
            )[0].offset
            if start < 0 or start >= high:
                return out
            records = read_partitions(
                consumer, topic, {part: (start, high)}, timeout=HISTORY_READ_TIMEOUT_S, skip_errors=True, batch=5_000
            )
            with contextlib.suppress(TimeoutError):  # what was read by then
                for m in records:
                    offset = m.offset() or 0
                    try:
                        rec = history_decoder.decode(m.value() or b"")
                    except DECODE_ERRORS:
                        logger.warning("%s[%d] offset %d: undecodable history record skipped", topic, part, offset)
                        continue
                    if rec.run_id == run_id and rec.wf_id == wf_id:
                        out.append(to_history_event(rec, part, offset))
        finally:
            consumer.close()
        return out

    # ------------------------------------------------------------------ run operations (used by handles)

    async def send_event(
        self,
        wf_id: str,
        event_name: str,
        payload: Any = None,
        run_id: str | None = None,
        *,
        identity: str | None = None,
    ) -> None:
        """Deliver an event to the latest run of `wf_id`.

        `identity` (default: the client's) is recorded in the run's ``event.received``.

        Raises:
            WorkflowNotFoundError: no such run.
            WorkflowError: the run already ended, or has no handler for this event.
        """
        non_empty_str(event_name, "event_name")
        who = self._identity(identity)
        raw = self.codec.to_primitive(payload)
        reply = await self._request(
            wf_id,
            lambda to: EventCmd(
                wf_id=wf_id,
                event_name=event_name,
                payload=raw,
                event_id=str(ULID()),
                run_id=run_id,
                reply_to=to,
                identity=who,
            ),
            what=f"payload of event {event_name!r}",
            value=raw,
        )
        self._raise_for(reply, wf_id)

    async def query(self, wf_id: str, name: str, payload: Any = None, timeout: float | None = None) -> Any:
        """Ask the latest run of `wf_id` a query; its worker answers from committed state.

        Raises:
            WorkflowNotFoundError: no such run.
            WorkflowError: no such query, the handler failed, or no worker answered in time.
        """
        raw = self.codec.to_primitive(payload)
        reply = await self._request(
            wf_id,
            lambda to: QueryCmd(wf_id=wf_id, name=name, payload=raw, reply_to=to),
            timeout=timeout,
            what=f"payload of query {name!r}",
            value=raw,
        )
        self._raise_for(reply, wf_id)
        return reply.payload

    async def cancel_run(
        self,
        wf_id: str,
        reason: str | None = None,
        *,
        terminate: bool = False,
        run_id: str | None = None,
        identity: str | None = None,
    ) -> None:
        """Cancel (or terminate) the latest run of `wf_id`.

        `identity` (default: the client's) is recorded in the run's cancel or terminate event.
        """
        who = self._identity(identity)
        reply = await self._request(
            wf_id,
            lambda to: CancelCmd(
                wf_id=wf_id, reason=reason, terminate=terminate, run_id=run_id, reply_to=to, identity=who
            ),
        )
        self._raise_for(reply, wf_id)

    # ------------------------------------------------------------------ schedules

    async def create_schedule(
        self,
        schedule_id: str,
        *,
        workflow_type: str,
        cron: str | Iterable[str] | None = None,
        interval: Any = None,
        calendars: Sequence[CalendarSpec] = (),
        exclude: Sequence[CalendarSpec] = (),
        time_zone: str = "UTC",
        start: datetime | None = None,
        end: datetime | None = None,
        jitter: Duration | None = None,
        input: Any = None,
        overlap: str | OverlapPolicy = OverlapPolicy.skip,
        catchup: Duration | None = None,
        paused: bool = False,
        note: str = "",
        id_template: str | None = None,
    ) -> ScheduleHandle:
        """Create a schedule: runs of `workflow_type` started at the ticks of a spec, exactly once each.

        The spec is the union of `cron` lines, `interval`s (`"every 5m offset 30s"`, a timedelta)
        and `calendars`, minus `exclude`, within `[start, end]`, read in `time_zone`. Each tick
        starts a run with id `<schedule_id>:<tick in UTC, ISO>` (or `id_template`, with
        `{schedule_id}` and `{tick}`), input `input`, and `ctx.run.scheduled_at` the tick.

        Args:
            schedule_id: the schedule's id (unique in the namespace).
            workflow_type: the type of the runs it starts (a worker must serve it).
            cron: cron lines (5 fields, or 6 with seconds first; `@daily` ...).
            interval: intervals.
            calendars: calendar specs (`CalendarSpec(hour="2", day_of_week="MON-FRI")`).
            exclude: calendar specs whose times never tick.
            time_zone: IANA zone of the cron lines, calendars and exclusions.
            start: no tick before (aware datetime).
            end: no tick after.
            jitter: delay each tick's firing by up to this (stable per schedule and tick).
            input: the runs' input.
            overlap: what a tick does while the previous run is running: skip, buffer_one,
                buffer_all, cancel_other, terminate_other, allow_all.
            catchup: ticks missed (no worker) within this window are fired late; older ones are
                counted as missed (default 1 year, at least 10 s).
            paused: create it paused.
            note: why it is paused.
            id_template: the workflow id of a tick's run.

        Raises:
            ScheduleSpecError: the spec cannot be used (invalid cron line, unknown time zone,
                end before start ...); nothing was sent.
            ScheduleAlreadyExistsError: a schedule with this id exists.
            WorkflowTypeNotRegisteredError: no worker serves `workflow_type`.
            NoWorkerAnsweredError: no worker answered.
        """
        non_empty_str(schedule_id, "schedule_id")
        non_empty_str(workflow_type, "workflow_type")
        spec = build_spec(
            cron=cron, interval=interval, calendars=calendars, exclude=exclude, time_zone=time_zone,
            start=start, end=end, jitter=jitter,
        )  # fmt: skip
        policy = overlap_policy(overlap) or OverlapPolicy.skip
        window = catchup_ms(catchup)
        raw_input = self.codec.to_primitive(input)
        cmd = ScheduleCreateCmd(
            wf_id=schedule_id, wf_type=workflow_type, spec=spec, input=raw_input, overlap=policy,
            paused=paused, note=note, id_template=id_template, identity=self.identity,
        )  # fmt: skip
        if window is not None:
            cmd.catchup_ms = window
        check_create(cmd)
        reply = await self._request(
            schedule_id,
            lambda to: msgspec.structs.replace(cmd, reply_to=to),
            what="schedule input",
            value=raw_input,
        )
        raise_schedule_refusal(reply, schedule_id, workflow_type)
        return ScheduleHandle(self, schedule_id)

    def get_schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        """A handle on an existing schedule (nothing is sent until it is used)."""
        non_empty_str(schedule_id, "schedule_id")
        return ScheduleHandle(self, schedule_id)

    async def list_schedules(self, *, timeout: float | None = None) -> list[ScheduleDescription]:
        """Every schedule of the namespace, by id (each partition's owner answers for its own, by pages).

        Raises:
            NoWorkerAnsweredError: the namespace has no running worker, or a partition did not answer.
        """
        io = await self._ensure()
        await io.require_workers()
        wait_s = self.request_timeout if timeout is None else timeout

        async def partition_page(p: int, after: str | None) -> tuple[list[Any], bool]:
            reply = await self._ask_partition(
                io, p, wait_s,
                lambda to: ScheduleListCmd(wf_id="", partition=p, reply_to=to, limit=SCHEDULE_PAGE, after=after),
            )  # fmt: skip
            return list(reply.payload["schedules"]), bool(reply.payload.get("more"))

        async def partition_all(p: int) -> list[ScheduleDescription]:
            found: list[ScheduleDescription] = []
            after: str | None = None
            while True:
                page, more = await partition_page(p, after)
                found.extend(ScheduleDescription.of(schedule_decoder.decode(encoder.encode(raw))) for raw in page)
                if not more or not page:
                    return found
                after = found[-1].id

        parts = await asyncio.gather(*(partition_all(p) for p in range(self.connection.num_partitions)))
        return sorted((d for part in parts for d in part), key=lambda d: d.id)

    # ------------------------------------------------------------------ limiters

    async def set_limiter(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: str | None = None,
        burst: int | None = None,
        per_key: Limit | int | None = None,
        weights: dict[str, int] | None = None,
        identity: str | None = None,
    ) -> LimiterDescription:
        """Create limiter `name`, or set what it allows (the whole spec: a limit left out is no limit).

        It takes effect with its next grant (`grctl limiter set` changes only the options it is given).

        Waiting requests are served at once if the new limits allow more. A change made here
        stands until a worker declaring the limiter (`Worker(limiters=[...])`) starts with a
        declaration that differs from the one it last applied.

        Args:
            name: the limiter's name.
            concurrency: permits held at once by all runs together.
            rate: permits per period ("50/s", "600/min", "5/10s").
            burst: the rate's bucket size (default: one period's permits).
            per_key: each key's own concurrency (`Limit(concurrency=2)` or 2).
            weights: fairness keys with a weight other than 1 (read at each grant).
            identity: who changes it (default: the client's), recorded as the limiter's
                `created_by` / `updated_by`.

        Raises:
            InvalidArgumentError: a limit ≤ 0, a malformed rate, no limit at all, a bad identity;
                nothing was sent.
            NoWorkerAnsweredError: no worker answered.
        """
        check_name(name)
        spec = make_spec(concurrency=concurrency, rate=rate, burst=burst, per_key=per_key, weights=weights)
        who = self._identity(identity)
        reply = await self._request(name, lambda to: LimiterSetCmd(wf_id=name, spec=spec, reply_to=to, identity=who))
        raise_limiter_refusal(reply, name)
        return LimiterDescription.of(record_of(reply.payload))

    async def describe_limiter(self, name: str) -> LimiterDescription:
        """Limiter `name`: its limits, permits in use, its queue by priority and fairness key, its counters.

        Raises:
            LimiterNotFoundError: no limiter has that name.
        """
        check_name(name)
        reply = await self._request(name, lambda to: LimiterDescribeCmd(wf_id=name, reply_to=to))
        raise_limiter_refusal(reply, name)
        payload = dict(reply.payload)
        return LimiterDescription.of(record_of(payload.pop("record")), payload)

    async def delete_limiter(self, name: str, *, force: bool = False) -> None:
        """Delete limiter `name`.

        Args:
            force: delete it even while permits are held or requested: waiting requests fail
                with `LimiterNotFoundError` in their steps; releases of held permits are ignored.

        Raises:
            LimiterNotFoundError: no limiter has that name.
            LimiterInUseError: permits are held or requested (and not `force`).
        """
        check_name(name)
        reply = await self._request(
            name, lambda to: LimiterDeleteCmd(wf_id=name, force=force, reply_to=to, identity=self.identity)
        )
        raise_limiter_refusal(reply, name)

    async def list_limiters(self, *, timeout: float | None = None) -> list[LimiterDescription]:
        """Every limiter of the namespace, by name (each partition's owner answers for its own).

        Raises:
            NoWorkerAnsweredError: the namespace has no running worker, or a partition did not answer.
        """
        io = await self._ensure()
        await io.require_workers()
        wait_s = self.request_timeout if timeout is None else timeout

        async def partition_list(p: int) -> list[LimiterDescription]:
            reply = await self._ask_partition(
                io, p, wait_s, lambda to: LimiterListCmd(wf_id="", partition=p, reply_to=to)
            )
            return [LimiterDescription.of(record_of(raw)) for raw in reply.payload["limiters"]]

        parts = await asyncio.gather(*(partition_list(p) for p in range(self.connection.num_partitions)))
        return sorted((d for part in parts for d in part), key=lambda d: d.name)

    async def _ask_partition(self, io: ClientIO, p: int, wait_s: float, make: Any) -> Reply:
        """Send the directive `make(reply_to)` to partition `p` of `directives` and wait for its owner's answer.

        Raises:
            NoWorkerAnsweredError: no answer within `wait_s` seconds.
        """
        to = ReplyTo(client_id=self.id, request_id=str(ULID()), partition=io.reply_partition)
        fut = io.expect_reply(to.request_id)
        try:
            await io.send(self.connection.topics.directives, p, b"", encoder.encode(make(to)))
            async with asyncio.timeout(wait_s):
                return await fut
        except TimeoutError:
            raise NoWorkerAnsweredError(
                f"partition {p} of namespace {self.connection.namespace!r} did not answer within "
                f"{wait_s:.0f}s (a rebalance?); try again",
                namespace=self.connection.namespace,
                timeout=wait_s,
            ) from None
        finally:
            io.forget_reply(to.request_id)

    @staticmethod
    def _raise_for(reply: Reply, wf_id: str) -> None:
        if reply.ok:
            return
        if reply.code == ReplyCode.not_found:
            raise WorkflowNotFoundError(reply.message or f"workflow id {wf_id!r} not found", wf_id=wf_id)
        raise WorkflowError(reply.message)
