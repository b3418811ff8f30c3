"""Every error grctl raises, under one root.

```
GrctlError
├── InvalidArgumentError (ValueError, TypeError)  a public call got an argument it cannot use
│   └── ScheduleSpecError              a schedule's spec cannot be used (cron line, time zone, ...)
├── WorkflowError                      a run failed, or an operation on a run was refused
│   ├── WorkflowNotFoundError          no run with that workflow id in the namespace
│   ├── WorkflowAlreadyRunningError    start with a workflow id whose latest run is active
│   ├── WorkflowTypeNotRegisteredError start of a type that no worker of the namespace serves
│   └── NoWorkerAnsweredError          no worker answered a request in time (none running?)
├── ScheduleError                      an operation on a schedule was refused
│   ├── ScheduleNotFoundError          no schedule with that id in the namespace
│   └── ScheduleAlreadyExistsError     create with the id of an existing schedule
├── StoreKeyNotFoundError (KeyError)   typed ctx.store.get of a key that was never put
├── ReadOnlyStoreError (RuntimeError)  ctx.store.put in a query handler
├── RemoteTaskError                    a remote task failed (its worker's error, or attempts ran out)
│   └── RemoteTaskTimeoutError (TimeoutError)  its last attempt timed out
├── NonDeterminismError                re-executed code diverged from the recorded journal
├── JournalMismatchError (TypeError)   a recorded value no longer fits the code (changed annotation)
├── NextDirectiveMissingError          a handler returned something other than a Directive
├── RegistrationError                  a workflow definition is invalid
│   ├── HandlerDefinitionError (TypeError)     a handler's signature is unusable
│   └── DuplicateHandlerError (ValueError)     a name registered twice
├── WorkflowNotRegisteredError         a worker got a run of a type it does not serve
├── WorkflowRunnerNotFoundError        a step name that the workflow does not define
├── HandlerArgumentError (TypeError)   a payload does not fit the handler's parameters
│   └── MissingArgumentError (KeyError)        a parameter's key is missing from the payload
├── OutsideStepError (LookupError)     a task or ctx call made outside a worker's step
├── NotAvailableInStepError (NotImplementedError)  a handle operation a step cannot replay (describe)
├── NoParentWorkflowError (RuntimeError)  send_to_parent from a run without a parent
├── CodecError (TypeError)             a value cannot be encoded or decoded
├── PayloadTooLargeError (ValueError)  a user value larger than the records that carry it allow
├── InvalidRecordError                 an input record that cannot be applied (dead-letter)
├── KafkaSetupError                    broker unreachable, topics missing or mismatched
│   ├── TopicMismatchError
│   └── LocalKafkaError                the local development broker (grctl.dev.kafka)
├── NamespaceNotFoundError             a namespace has none of its topics (describe, the UI)
├── SchemaRegistryError                a schema-registry format could not be used
│   ├── SchemaRegistryUnavailableError the registry did not answer (or refused this client)
│   ├── UnknownSchemaError             a record names a schema id the registry does not know
│   ├── WireFormatError (ValueError)   bytes that are not magic byte 0 + 4-byte schema id + payload
│   └── SchemaSerializationError (ValueError)  a value does not fit its schema, or the schema was refused
├── StateError                         the local state store is unusable (locked, corrupt)
├── MetricsPortInUseError              a worker's metrics port cannot be bound
├── TracingNotInstalledError (ImportError)  tracing asked for without OpenTelemetry installed
├── EventLoopNotInstalledError (ImportError)  GRCTL_EVENT_LOOP names a loop that is not installed (uvloop)
├── ForkedProcessError (RuntimeError)  a Client or Worker used in a process forked after it
├── TestEnvironmentError (RuntimeError)  a grctl.testing environment used before its start or after its stop
├── InternalError                      an engine invariant broke: a bug in grctl, never data
└── CommandFailed                      the CLI's one-line failure (grctl.cli.common)
```

Errors carry what identifies their subject as attributes (`wf_id`, `run_id`, `step`,
`error_type`, `topic`, ...), and their message says what to do.

A few errors that user code sees inside a step keep the builtin class name of the original
SDK in a run's recorded failure (`reported_type`): a failed run reads "KeyError: ..." or
"RuntimeError: No parent workflow to send event to." as it did, while the raised class is
still a `GrctlError` (and a `KeyError` / `RuntimeError`).

The compatibility modules (`grctl.models.errors`, `grctl.worker.errors`, `grctl.worker.store`,
`grctl.worker.runtime`) re-export these classes, so `except WorkflowError` works whichever
module the user imported it from.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GrctlError(Exception):
    """Root of every error raised by grctl.

    Attributes:
        reported_type: the class name recorded in a run's error details when this error fails
            a step (None: the class's own name).
    """

    reported_type: ClassVar[str | None] = None


class InvalidArgumentError(GrctlError, ValueError, TypeError):
    """A public call got an argument it cannot use (wrong type or value).

    Raised in a step (a `ctx` call with a bad argument), it is recorded as a `ValueError`, the
    class the original SDK raised there.

    Attributes:
        argument: the parameter's name.
    """

    reported_type = "ValueError"

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class ScheduleSpecError(InvalidArgumentError):
    """A schedule's spec cannot be used: a cron line, a time zone, an interval, a calendar field.

    Attributes:
        field: the part of the spec at fault (`cron`, `time_zone`, `interval`, `calendar.hour`, ...).
        value: the value given for it.
    """

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message, argument=field)
        self.field = field
        self.value = value


class InternalError(GrctlError):
    """An invariant of the engine broke. This is a bug in grctl, not a problem with the input:
    the worker fails loudly (its session restarts) instead of diverting anything."""


# --------------------------------------------------------------------------- runs


class WorkflowError(GrctlError):
    """A run failed, or an operation on a run was refused.

    Attributes:
        wf_id: the workflow id, when known.
        run_id: the run id, when known.
        error_type: for a failed run, the class name of the error that failed it.
        error_message: for a failed run, that error's message.
        details: for a failed run, the recorded error (type, message, stack_trace,
            qualified_type), as a dict.
    """

    def __init__(
        self,
        message: str = "",
        *,
        wf_id: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.wf_id = wf_id
        self.run_id = run_id
        self.error_type = error_type
        self.error_message = error_message
        self.details = details


class WorkflowNotFoundError(WorkflowError):
    """No run with this workflow id exists in the namespace."""


class WorkflowAlreadyRunningError(WorkflowError):
    """A run with this workflow id is still active (`run_id` is the active run)."""


class WorkflowTypeNotRegisteredError(WorkflowError):
    """The workflow type is not served by the workers of the namespace.

    Attributes:
        wf_type: the workflow type that was asked for.
    """

    def __init__(
        self, message: str = "", *, wf_type: str | None = None, wf_id: str | None = None, run_id: str | None = None
    ) -> None:
        super().__init__(message, wf_id=wf_id, run_id=run_id)
        self.wf_type = wf_type


class NoWorkerAnsweredError(WorkflowError):
    """No worker of the namespace answered a request within its timeout.

    Attributes:
        namespace: the namespace asked.
        timeout: the seconds waited.
    """

    def __init__(
        self,
        message: str,
        *,
        namespace: str,
        timeout: float,
        wf_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, wf_id=wf_id, run_id=run_id)
        self.namespace = namespace
        self.timeout = timeout


# --------------------------------------------------------------------------- step code


class ScheduleError(GrctlError):
    """An operation on a schedule was refused (the message says why and what to do).

    Attributes:
        schedule_id: the schedule's id.
        code: the refusal's code (`grctl.engine.records.ReplyCode`), if a worker refused it.
    """

    def __init__(self, message: str, *, schedule_id: str, code: str | None = None) -> None:
        super().__init__(message)
        self.schedule_id = schedule_id
        self.code = code


class ScheduleNotFoundError(ScheduleError):
    """No schedule with that id in the namespace."""


class ScheduleAlreadyExistsError(ScheduleError):
    """A schedule with that id already exists: update it, delete it first, or use another id."""


class StoreKeyNotFoundError(GrctlError, KeyError):
    """A typed `ctx.store.get(key, T)` found no value for the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"Store key not found: {self.key!r}"


class ReadOnlyStoreError(GrctlError, RuntimeError):
    """`ctx.store.put` was called where the store is read-only (a query handler)."""


class NonDeterminismError(GrctlError):
    """Re-executed step code made a different call than the one recorded in its journal."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        position: int | None = None,
        expected: str | None = None,
        got: str | None = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.position = position
        self.expected = expected
        self.got = got


class JournalMismatchError(GrctlError, TypeError):
    """A value recorded by an earlier execution no longer fits the code that reads it back.

    Attributes:
        step: the step re-executing.
        name: the task (or call) whose recorded value does not fit.
        expected: the type the code asks for now.
    """

    def __init__(self, message: str, *, step: str | None = None, name: str | None = None, expected: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.name = name
        self.expected = expected


class NextDirectiveMissingError(GrctlError):
    """A handler returned something other than a `Directive`."""


class HandlerArgumentError(GrctlError, TypeError):
    """A step's payload does not fit its handler's parameters (recorded as TypeError)."""

    reported_type = "TypeError"


class MissingArgumentError(HandlerArgumentError, KeyError):
    """A handler parameter's key is missing from the payload dict (recorded as KeyError)."""

    reported_type = "KeyError"

    def __str__(self) -> str:  # KeyError's str() quotes its argument
        return str(self.args[0]) if self.args else ""


class RemoteTaskError(GrctlError):
    """A remote task (`ctx.remote_task`) failed: its worker answered an error, or no attempt was left.

    Attributes:
        task: the task's name.
        queue: its queue.
        error_type: the error's type as the task worker reported it (e.g. "ValueError").
        attempt: the attempt that failed last.
        details: the error as recorded (`type`, `message`, and what the worker added).
    """

    def __init__(
        self, message: str, *, task: str, queue: str, error_type: str, attempt: int, details: dict[str, Any]
    ) -> None:
        super().__init__(message)
        self.task = task
        self.queue = queue
        self.error_type = error_type
        self.attempt = attempt
        self.details = details


class RemoteTaskTimeoutError(RemoteTaskError, TimeoutError):
    """The last attempt of a remote task timed out (schedule-to-start, start-to-close or heartbeat)."""


class LimiterError(GrctlError):
    """A limiter refused, or cannot be used as asked (`ctx.limit`, `Client.set_limiter`).

    Attributes:
        limiter: the limiter's name.
    """

    def __init__(self, message: str, *, limiter: str) -> None:
        super().__init__(message)
        self.limiter = limiter


class LimiterNotFoundError(LimiterError, LookupError):
    """No limiter has that name (never created, or deleted): create it, or declare it in a Worker."""


class LimiterInUseError(LimiterError):
    """A limiter cannot be deleted while permits are held or requested (unless forced)."""


class OutsideStepError(GrctlError, LookupError):
    """A task or a `ctx` call was made outside a step executed by a grctl Worker."""


class NotAvailableInStepError(GrctlError, NotImplementedError):
    """A step called a handle operation whose answer would differ when the step re-executes
    (`describe` or `query` of a child): make that call from a `Client`.

    Attributes:
        operation: the operation called ("describe", "query").
    """

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class NoParentWorkflowError(GrctlError, RuntimeError):
    """`ctx.send_to_parent` in a run that has no parent (recorded as RuntimeError)."""

    reported_type = "RuntimeError"


# --------------------------------------------------------------------------- definitions


class RegistrationError(GrctlError):
    """A workflow definition is invalid or could not be registered."""


class HandlerDefinitionError(RegistrationError, TypeError):
    """A decorated handler has an invalid signature."""


class DuplicateHandlerError(RegistrationError, ValueError):
    """A workflow registers the same handler name twice (or a second start handler).

    Attributes:
        wf_type: the workflow type.
        name: the name registered twice.
    """

    def __init__(self, message: str, *, wf_type: str, name: str) -> None:
        super().__init__(message)
        self.wf_type = wf_type
        self.name = name


class WorkflowNotRegisteredError(GrctlError):
    """A worker received a run of a workflow type it does not serve."""


class WorkflowRunnerNotFoundError(GrctlError):
    """A directive names a step the workflow does not define."""


class CodecError(GrctlError, TypeError):
    """A value cannot be encoded to, or decoded from, the wire format."""


class PayloadTooLargeError(GrctlError, ValueError):
    """A user value is larger than the Kafka records that must carry it allow.

    Raised where the value enters (the client before anything is sent; in a step at the call,
    so the step fails like any exception), never after something was staged.

    Attributes:
        what: the value, e.g. "store value 'blob'" or "start input".
        size: its encoded size in bytes.
        limit: the largest size accepted (`Connection.limits.value_bytes`).
        wf_id: the workflow id concerned, when known.
    """

    def __init__(self, what: str, *, size: int, limit: int, wf_id: str | None = None) -> None:
        where = f" of workflow id {wf_id!r}" if wf_id else ""
        super().__init__(
            f"{what}{where} is {size:,} bytes encoded, over the limit of {limit:,} bytes for one value "
            f"(the topics' max.message.bytes and the producer's message.max.bytes bound every record). "
            f"Keep large data elsewhere (object storage, a database) and pass a reference, or raise the "
            f"limits (docs/how-to/size-limits.md)"
        )
        self.what = what
        self.size = size
        self.limit = limit
        self.wf_id = wf_id


# --------------------------------------------------------------------------- records, Kafka, state


class InvalidRecordError(GrctlError):
    """An input record cannot be applied: undecodable, on the wrong partition, or malformed.

    Such records go to the namespace's dead-letter topic with `reason`; everything else that
    goes wrong while applying a record is an engine bug and fails the worker's session.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KafkaSetupError(GrctlError):
    """Kafka is unreachable, or the namespace's topics are missing or inconsistent."""


class NamespaceNotFoundError(GrctlError):
    """A namespace has none of its topics: it was never created, or it was deleted.

    Attributes:
        namespace: the namespace.
    """

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} does not exist; create it with `grctl namespace create {namespace}`")
        self.namespace = namespace


class EmitTopicNotFoundError(GrctlError):
    """A step emitted to a topic that does not exist (or that this principal may not see).

    Raised in the step when its handler returns (the step fails like any exception; nothing of
    it is published). Create the topic, or grant Describe and Write on it.

    Attributes:
        topic: the topic.
    """

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(
            f"cannot emit to topic {topic!r}: it does not exist or this worker's principal may not see it "
            f"({detail}); create it (kafka-topics.sh --create --topic {topic}) or grant Describe and Write on it"
        )
        self.topic = topic
        self.detail = detail


class KafkaAuthorizationError(KafkaSetupError):
    """Kafka refused this principal an operation (a missing ACL) or could not authenticate it.

    Attributes:
        resource: what was refused ("topics", "groups", "transactional ids", "cluster"), or
            "authentication".
        namespace: the grctl namespace it was refused in.
    """

    def __init__(self, message: str, *, resource: str, namespace: str | None = None) -> None:
        super().__init__(message)
        self.resource = resource
        self.namespace = namespace


class TopicMismatchError(KafkaSetupError):
    """A namespace topic exists with a different partition count than its siblings."""

    def __init__(self, topic: str, *, expected: int, found: int) -> None:
        super().__init__(
            f"topic {topic!r} has {found} partitions but the namespace uses {expected}; all topics "
            f"of a namespace must be co-partitioned. Recreate the namespace (grctl namespace delete/create) "
            f"or add partitions to {topic!r} with kafka-topics --alter --partitions {expected}."
        )
        self.topic = topic
        self.expected = expected
        self.found = found


class SchemaRegistryError(GrctlError):
    """A value in a schema-registry format (Avro, Protobuf, JSON Schema) could not be handled.

    Attributes:
        url: the registry's URL ('' when no registry was involved).
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class SchemaRegistryUnavailableError(SchemaRegistryError):
    """The schema registry did not answer, answered with a server error, or refused this client.

    Not a property of the record: a source record whose lookup fails this way is not
    dead-lettered; the worker's session restarts after a back-off and reads it again. In a step
    (`ctx.emit`) it fails the step like any exception (its retry policy applies).
    """

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"the schema registry at {url} is unavailable ({detail}): check that it runs and that this worker "
            "reaches it (Worker(schema_registry=...) or GRCTL_SCHEMA_REGISTRY_URL; for a local one: "
            "grctl dev registry start)",
            url=url,
        )
        self.detail = detail


class UnknownSchemaError(SchemaRegistryError):
    """A record's wire format names a schema id the registry does not know (a dead-letter reason).

    Attributes:
        schema_id: the id in the record.
    """

    def __init__(self, schema_id: int, url: str) -> None:
        super().__init__(
            f"schema id {schema_id} is not known to the schema registry at {url}: the record was written "
            "with another registry, or its schema was deleted",
            url=url,
        )
        self.schema_id = schema_id


class WireFormatError(SchemaRegistryError, ValueError):
    """Bytes that are not in the schema registry's wire format (magic byte 0, 4-byte schema id, payload)."""


class SchemaSerializationError(SchemaRegistryError, ValueError):
    """A value could not be encoded with its schema (it does not fit, or the registry refused the schema).

    Raised in the step when its handler returns; the step fails and publishes nothing.

    Attributes:
        topic: the topic the value was for.
        format: "avro", "protobuf" or "jsonschema".
        field: "value", or "key" for a record key (`ctx.emit(key_format=...)`).
    """

    def __init__(self, message: str, *, topic: str, format: str, url: str = "", field: str = "value") -> None:
        super().__init__(message, url=url)
        self.topic = topic
        self.format = format
        self.field = field


class StateError(GrctlError):
    """The local state store is unusable (locked by another process, or corrupt)."""


class MetricsPortInUseError(GrctlError):
    """A worker's metrics endpoint cannot listen on its port (another process has it).

    Attributes:
        port: the port asked for.
        host: the interface.
        reason: what the operating system said.
    """

    def __init__(self, port: int, *, host: str, reason: str) -> None:
        super().__init__(
            f"the worker's metrics endpoint cannot listen on {host}:{port} ({reason}); another process uses "
            f"the port: give each worker its own (Worker(metrics_port=...), grctl worker --metrics-port), or 0 "
            f"for any free port"
        )
        self.port = port
        self.host = host
        self.reason = reason


class TracingNotInstalledError(GrctlError, ImportError):
    """Tracing was turned on, but OpenTelemetry is not installed.

    Attributes:
        missing: the import that failed.
    """

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"OpenTelemetry is not installed ({missing}): install grctl with its tracing extra, "
            f"pip install 'grctl[otel]'"
        )
        self.missing = missing


class EventLoopNotInstalledError(GrctlError, ImportError):
    """GRCTL_EVENT_LOOP asks for an event loop whose package is not installed (uvloop).

    Attributes:
        loop: the loop asked for.
    """

    def __init__(self, loop: str) -> None:
        super().__init__(
            f"GRCTL_EVENT_LOOP={loop}, but {loop} is not installed: install grctl with its extra, "
            f"pip install 'grctl[{loop}]', or unset GRCTL_EVENT_LOOP (asyncio's own loop)"
        )
        self.loop = loop


class TestEnvironmentError(GrctlError, RuntimeError):
    """A `grctl.testing` environment used outside its lifetime (before `start`, after `stop`, or started twice)."""

    __test__ = False  # not a test class, whatever pytest's name patterns say


class ForkedProcessError(GrctlError, RuntimeError):
    """A `Client` or `Worker` was used in a process forked after it was created.

    librdkafka's threads do not survive `fork()`: create clients and workers in the child
    (after the fork), or use the "spawn"/"forkserver" start method of `multiprocessing`.

    Attributes:
        what: the object used ("Client", "Worker").
    """

    def __init__(self, what: str, *, created_pid: int, used_pid: int) -> None:
        super().__init__(
            f"this {what} was created in process {created_pid} and used in process {used_pid}, forked "
            f"from it; librdkafka clients do not survive fork(): create the {what} after the fork, or "
            f"start processes with multiprocessing's 'spawn' or 'forkserver' method"
        )
        self.what = what
        self.created_pid = created_pid
        self.used_pid = used_pid
