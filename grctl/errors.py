"""Every error grctl raises, under one root.

```
GrctlError
├── WorkflowError                      a run failed, or an operation on a run was refused
│   ├── WorkflowNotFoundError          no run with that workflow id in the namespace
│   ├── WorkflowAlreadyRunningError    start with a workflow id whose latest run is active
│   └── WorkflowTypeNotRegisteredError start of a type that no worker of the namespace serves
├── StoreKeyNotFoundError (KeyError)   typed ctx.store.get of a key that was never put
├── NonDeterminismError                re-executed code diverged from the recorded journal
├── NextDirectiveMissingError          a handler returned something other than a Directive
├── RegistrationError                  a workflow definition is invalid
│   └── HandlerDefinitionError (TypeError)
├── WorkflowNotRegisteredError         a worker got a run of a type it does not serve
├── WorkflowRunnerNotFoundError        a step name that the workflow does not define
├── CodecError (TypeError)             a value cannot be encoded or decoded
├── KafkaSetupError                    broker unreachable, topics missing or mismatched
│   └── TopicMismatchError
└── StateError                         the local state store is unusable (locked, corrupt)
```

The compatibility modules (`grctl.models.errors`, `grctl.worker.errors`, `grctl.worker.store`,
`grctl.worker.runtime`) re-export these classes, so `except WorkflowError` works whichever
module the user imported it from.
"""

from __future__ import annotations


class GrctlError(Exception):
    """Root of every error raised by grctl."""


class WorkflowError(GrctlError):
    """A run failed, or an operation on a run was refused."""


class WorkflowNotFoundError(WorkflowError):
    """No run with this workflow id exists in the namespace."""

    def __init__(self, message: str, *, wf_id: str | None = None) -> None:
        super().__init__(message)
        self.wf_id = wf_id


class WorkflowAlreadyRunningError(WorkflowError):
    """A run with this workflow id is still active."""

    def __init__(self, message: str, *, wf_id: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.wf_id = wf_id
        self.run_id = run_id


class WorkflowTypeNotRegisteredError(WorkflowError):
    """The workflow type is not served by the workers of the namespace."""

    def __init__(self, message: str, *, wf_type: str | None = None) -> None:
        super().__init__(message)
        self.wf_type = wf_type


class StoreKeyNotFoundError(GrctlError, KeyError):
    """A typed `ctx.store.get(key, T)` found no value for the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"Store key not found: {self.key!r}"


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


class NextDirectiveMissingError(GrctlError):
    """A handler returned something other than a `Directive`."""


class RegistrationError(GrctlError):
    """A workflow definition is invalid or could not be registered."""


class HandlerDefinitionError(RegistrationError, TypeError):
    """A decorated handler has an invalid signature."""


class WorkflowNotRegisteredError(GrctlError):
    """A worker received a run of a workflow type it does not serve."""


class WorkflowRunnerNotFoundError(GrctlError):
    """A directive names a step the workflow does not define."""


class CodecError(GrctlError, TypeError):
    """A value cannot be encoded to, or decoded from, the wire format."""


class KafkaSetupError(GrctlError):
    """Kafka is unreachable, or the namespace's topics are missing or inconsistent."""


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


class StateError(GrctlError):
    """The local state store is unusable (locked by another process, or corrupt)."""
