"""librdkafka's own log lines, through Python logging (logger `grctl.librdkafka`).

Every Kafka client grctl creates gets `"logger": LIBRDKAFKA_LOGGER` in its configuration
(`Connection.client_config`), so librdkafka no longer prints `%6|...|BGQUEUE|...` lines on
stderr: confluent-kafka hands each line to `LibrdkafkaLogger.log` when the client is polled.

Levels are remapped to what the line means to a grctl user (STYLE: WARNING for recovered
faults, ERROR only with the action taken):

| librdkafka (syslog) | Python |
|---|---|
| emerg, alert, crit (0-2) | ERROR |
| err, warning (3-4): a broker down, a connection refused; librdkafka retries | WARNING |
| notice, info, debug (5-7): purged events, rebalance details | DEBUG |

The same line of the same client (numbers ignored: "after 3ms in state CONNECT") is logged
once per `REPEAT_WINDOW_S`; the next one after the window says how many were left out.
Each record carries `kafka_client` (librdkafka's client name) and `kafka_facility`.

May import: nothing of grctl.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Final

#: Identical lines of one client within this many seconds are logged once.
REPEAT_WINDOW_S: Final = 10.0
#: Bound of the lines remembered for repeat suppression.
MAX_REMEMBERED: Final = 1000

_DIGITS = re.compile(r"\d+")


def _python_level(level: int) -> int:
    if level >= logging.CRITICAL:
        return logging.ERROR
    if level >= logging.WARNING:
        return logging.WARNING
    return logging.DEBUG


class LibrdkafkaLogger:
    """The `logger` of every grctl Kafka client: librdkafka lines as Python log records.

    confluent-kafka calls `log(level, "%s [%s] %s", facility, client_name, message)`, with
    `level` already a Python level; any thread may call it (the one that polls the client).

    Args:
        name: the Python logger's name.
    """

    def __init__(self, name: str = "grctl.librdkafka") -> None:
        self.logger = logging.getLogger(name)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (client, line) -> (first, left out)
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """Log one librdkafka line (the method confluent-kafka calls)."""
        py_level = _python_level(level)
        if not self.logger.isEnabledFor(py_level):
            return
        if len(args) == 3:
            facility, client, message = (str(a) for a in args)
        else:  # not confluent-kafka's usual call
            facility, client, message = "", "", (fmt % args if args else fmt)
        key = (client, facility + _DIGITS.sub("", message))
        now = time.monotonic()
        with self._lock:
            first, left_out = self._seen.get(key, (0.0, 0))
            if now - first < REPEAT_WINDOW_S:
                self._seen[key] = (first, left_out + 1)
                return
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            self._seen[key] = (now, 0)
        suffix = f" ({left_out} more like it in the last {REPEAT_WINDOW_S:.0f} s)" if left_out else ""
        self.logger.log(
            py_level,
            "%s %s: %s%s",
            client,
            facility,
            message,
            suffix,
            extra={"kafka_client": client, "kafka_facility": facility},
        )

    def __repr__(self) -> str:
        return f"LibrdkafkaLogger({self.logger.name!r})"


#: The one logger every grctl Kafka client uses.
LIBRDKAFKA_LOGGER: Final = LibrdkafkaLogger()
