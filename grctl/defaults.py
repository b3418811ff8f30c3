"""Every default of grctl, in one place, with where its value comes from.

Imports nothing of grctl: any module may read it. Durations are `timedelta` where the public
API takes one, and `*_ms` / `*_s` numbers where the engine needs them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

#: Bootstrap servers when neither an argument nor GRCTL_KAFKA_SERVERS names a cluster.
KAFKA_SERVERS: Final = "127.0.0.1:9092"
#: Namespace when neither an argument nor GRCTL_NAMESPACE names one.
NAMESPACE: Final = "default"
#: Partitions of every topic of a namespace created without a count (DESIGN.md §2).
PARTITIONS: Final = 12

#: Timeout of a step declared with `@wf.step()` and no timeout: the original SDK stores 10 s
#: (BEHAVIOUR.md §1.2, §2.2).
DECORATED_STEP_TIMEOUT: Final = timedelta(seconds=10)
#: Timeout of every other step (start, event handlers without a timeout, child callbacks,
#: on_timeout steps): the original server's `defaults.step_timeout`, 5 minutes.
STEP_TIMEOUT: Final = timedelta(minutes=5)
STEP_TIMEOUT_MS: Final = int(STEP_TIMEOUT.total_seconds() * 1000)
#: A wait without a timeout waits for its event forever (the original failed it after its
#: server's 1 h default; a listed difference, docs/differences.md).
WAIT_TIMEOUT: Final[timedelta | None] = None

#: How long an ended run's state is kept before it is deleted (issue "Run for weeks").
RUN_RETENTION: Final = timedelta(days=7)

#: How long request/reply calls (describe, send, cancel, terminate, query) wait for the
#: owning worker; GRCTL_REQUEST_TIMEOUT overrides it.
REQUEST_TIMEOUT_S: Final = 15.0
#: How long `start_workflow` waits for a worker to accept or reject the run. Generous: after a
#: worker crash its partitions wait for the group's session timeout and the dead producer's
#: transaction timeout before another worker can take them.
START_ACK_TIMEOUT_S: Final = 60.0
#: How long `Connection.connect` waits for the broker.
CONNECT_TIMEOUT_S: Final = 10.0
#: A query handler must answer within this long.
QUERY_TIMEOUT_S: Final = 10.0
#: Graceful stop: running steps get this long to finish (BEHAVIOUR.md §1.11).
SHUTDOWN_TIMEOUT_S: Final = 30.0
#: Steps executing at once in one worker.
MAX_CONCURRENT_STEPS: Final = 1000

#: Start-to-close timeout of a remote task's attempt when the call names none (Temporal requires
#: one; a default keeps a task whose worker died from waiting forever).
REMOTE_TASK_TIMEOUT_MS = 5 * 60 * 1000
