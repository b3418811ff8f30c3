"""The error of the local Kafka tools (`grctl.dev.kafka`, `grctl.dev.secure`)."""

from __future__ import annotations

from grctl.errors import KafkaSetupError


class LocalKafkaError(KafkaSetupError):
    """The local Kafka could not be set up, started or reached; the message says what to do.

    Attributes:
        summary: The first line of the message, fit for a one-line CLI error.
        details: Further lines (paths, log tails), possibly empty.
    """

    def __init__(self, summary: str, details: str = "") -> None:
        """Create the error.

        Args:
            summary: One line: what failed and what to do.
            details: Optional further lines (paths of logs, their last lines).
        """
        self.summary = summary
        self.details = details
        super().__init__(f"{summary}\n{details}" if details else summary)
