"""Queries: `@wf.query` handlers answered from a run's committed state, on `replies`.

Each query runs in a task of its own (never blocking the partition), reads only committed
state (a query must not see a transition that may still abort), and answers the asking
client's partition of `replies` through the open batch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from grctl import defaults
from grctl.codec import CodecRegistry
from grctl.engine.records import QueryCmd, Reply, ReplyCode, encoder
from grctl.errors import PayloadTooLargeError
from grctl.worker._session.executor import PartitionTasks, run_info_of
from grctl.worker._session.served import Served
from grctl.workflow.context import QueryContext
from grctl.workflow.handlers import bind_arguments
from grctl.workflow.store import Store

if TYPE_CHECKING:
    from grctl.worker._partition.ports import StepHost


class QueryAnswerer:
    """Answers queries (see the module docstring).

    Args:
        served: the workflow definitions served, by type and version.
        codec: the codec for user values.
        tasks: where the query tasks are tracked (a revoke waits for them).
    """

    def __init__(self, *, served: Served, codec: CodecRegistry, tasks: PartitionTasks) -> None:
        self._served = served
        self._codec = codec
        self._tasks = tasks

    def spawn(self, proc: StepHost, cmd: QueryCmd) -> None:
        """Answer `cmd` in a task of its own."""
        task = asyncio.create_task(self._answer(proc, cmd), name=f"query:{cmd.wf_id}:{cmd.name}")
        self._tasks.add(task, proc.partition)

    async def _answer(self, proc: StepHost, cmd: QueryCmd) -> None:
        try:
            await self._answer_from_committed(proc, cmd)
        finally:
            self._tasks.discard(asyncio.current_task())

    async def _answer_from_committed(self, proc: StepHost, cmd: QueryCmd) -> None:
        to = cmd.reply_to

        def reply(**kw: Any) -> None:
            value = encoder.encode(Reply(request_id=to.request_id, client_id=to.client_id, **kw))
            limit = proc.value_limit
            if len(value) > limit:
                err = PayloadTooLargeError(
                    f"answer of query {cmd.name!r}", size=len(value), limit=limit, wf_id=cmd.wf_id
                )
                value = encoder.encode(
                    Reply(
                        request_id=to.request_id, client_id=to.client_id, ok=False,
                        code=ReplyCode.payload_too_large, message=str(err),
                    )
                )  # fmt: skip
            proc.send_reply(to, value, cmd.wf_id)

        run = proc.get_committed_run(cmd.wf_id)
        if run is None or run.wf_type not in self._served:
            reply(ok=False, code=ReplyCode.not_found, message=f"no run of workflow id {cmd.wf_id!r}")
            return
        wf = self._served.get(run.wf_type, run.version)
        if wf is None:
            message = (
                f"the run of {cmd.wf_id!r} is on version {run.version} of {run.wf_type!r}, which the worker "
                f"that owns it does not serve; ask again once a worker serving that version owns it"
            )
            reply(ok=False, code=ReplyCode.unknown_query, message=message)
            return
        cfg = wf.query_handler(cmd.name)
        if cfg is None:
            message = f"workflow type {run.wf_type!r} has no query {cmd.name!r}"
            reply(ok=False, code=ReplyCode.unknown_query, message=message)
            return
        wf_id, run_id = run.wf_id, run.run_id

        def read(key: str) -> bytes | None:
            return proc.read_committed_store(wf_id, run_id, key)

        ctx = QueryContext(run=run_info_of(run), store=Store(read, self._codec, read_only=True))
        try:
            kwargs = bind_arguments(cfg.spec, cmd.payload, self._codec)
            async with asyncio.timeout(defaults.QUERY_TIMEOUT_S):
                value = await cfg.handler(ctx, **kwargs)
            reply(payload=self._codec.to_primitive(value))
        except Exception as exc:  # noqa: BLE001  # user code: any error becomes the answer
            reply(ok=False, code=ReplyCode.query_failed, message=f"{type(exc).__name__}: {exc}")
