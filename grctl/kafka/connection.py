"""`Connection`: where the Kafka cluster is, which namespace, and the client options."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl import defaults
from grctl.errors import KafkaSetupError
from grctl.kafka.acls import authorization_error
from grctl.kafka.limits import TOPIC_DEFAULT_MAX_BYTES, RecordLimits, producer_max_bytes, topic_max_bytes
from grctl.kafka.logs import LIBRDKAFKA_LOGGER
from grctl.kafka.topics import DEFAULT_PARTITIONS, TopicNames, admin_client, ensure_namespace
from grctl.settings import EngineSettings

DEFAULT_SERVERS = defaults.KAFKA_SERVERS
CONNECT_TIMEOUT_S = defaults.CONNECT_TIMEOUT_S


def servers_from_env(servers: str | list[str] | None = None) -> str:
    """Bootstrap servers: the argument, else GRCTL_KAFKA_SERVERS (or GRCTL_KAFKA_BOOTSTRAP), else localhost."""
    if servers:
        return ",".join(servers) if isinstance(servers, list | tuple) else str(servers)
    return EngineSettings.from_env().kafka_servers


class Connection:
    """A Kafka cluster and a grctl namespace on it.

    Use `await Connection.connect(...)`: it checks the broker answers and that the namespace's
    topics exist (creating them by default), so errors surface here rather than later.

    Args:
        servers: bootstrap servers.
        namespace: the grctl namespace (topics `grctl.<namespace>.*`).
        kafka_config: extra librdkafka options (security, SASL, TLS, ...) for every client.
        partitions: partition count used when the namespace is created.
        max_value_bytes: lower the largest user value accepted (default: what the topics and
            the producer allow, see `limits`).

    Attributes:
        limits: the record and value size limits learned from the cluster (`connect`).
    """

    def __init__(
        self,
        servers: str | list[str] | None = None,
        namespace: str | None = None,
        *,
        kafka_config: dict[str, Any] | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        max_value_bytes: int | None = None,
    ) -> None:
        self.servers = servers_from_env(servers)
        self.namespace = namespace or EngineSettings.from_env().namespace
        self.topics = TopicNames(self.namespace)
        self.kafka_config: dict[str, Any] = dict(kafka_config or {})
        self.partitions = partitions
        self.num_partitions = 0
        self.max_value_bytes = max_value_bytes
        self.limits = RecordLimits.compute(
            dict.fromkeys(self.topics.partitioned(), TOPIC_DEFAULT_MAX_BYTES),
            producer_max_bytes=producer_max_bytes(self.kafka_config),
            max_value_bytes=max_value_bytes,
        )

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] | None = None,
        namespace: str | None = None,
        *,
        kafka_config: dict[str, Any] | None = None,
        partitions: int = DEFAULT_PARTITIONS,
        create_namespace: bool = True,
        timeout: float = CONNECT_TIMEOUT_S,
        max_value_bytes: int | None = None,
        **options: Any,
    ) -> Connection:
        """Connect to Kafka and make sure the namespace exists.

        Args:
            servers: bootstrap servers (else GRCTL_KAFKA_SERVERS, else 127.0.0.1:9092).
            namespace: the namespace (else GRCTL_NAMESPACE, else "default").
            kafka_config: librdkafka options passed to every client (e.g. security.protocol).
            partitions: partition count if the namespace has to be created.
            create_namespace: create missing topics (False: raise if missing).
            timeout: seconds to wait for the broker.
            max_value_bytes: lower the largest user value accepted (see `limits`).
            **options: more librdkafka options, with '_' for '.' (sasl_mechanism="PLAIN").

        Raises:
            KafkaSetupError: the broker does not answer, or the namespace is unusable.
        """
        cfg = dict(kafka_config or {})
        cfg.update({k.replace("_", "."): v for k, v in options.items()})
        conn = cls(servers, namespace, kafka_config=cfg, partitions=partitions, max_value_bytes=max_value_bytes)
        await asyncio.get_running_loop().run_in_executor(None, conn._setup, create_namespace, timeout)
        return conn

    def _setup(self, create: bool, timeout: float) -> None:
        seen: list[KafkaError] = []  # librdkafka's connection-level errors (authentication, ...)
        admin = admin_client({**self.client_config(), "error_cb": seen.append})
        try:
            admin.list_topics(topic=self.topics.directives, timeout=timeout)
        except KafkaException as exc:
            admin.poll(0)  # hand librdkafka's lines about it (connection refused, ...) to logging
            for err in seen:
                refused = authorization_error(err, self.namespace, "client", f"connecting to {self.servers}")
                if refused is not None:
                    raise refused from None
            raise KafkaSetupError(
                f"cannot reach Kafka at {self.servers} within {timeout:.0f}s ({exc.args[0] if exc.args else exc}). "
                f"Is the broker running? Start a local one with `grctl dev kafka start`, or point "
                f"GRCTL_KAFKA_SERVERS at your cluster."
            ) from None
        try:
            self.num_partitions = ensure_namespace(
                admin, self.topics, partitions=self.partitions, create=create, timeout=timeout
            )
            self.limits = self.learn_limits(admin=admin, timeout=timeout)
        except KafkaSetupError as exc:
            refused = authorization_error(exc, self.namespace, "client")
            if refused is not None and refused is not exc:
                raise refused from exc
            raise

    def learn_limits(
        self, producer_config: dict[str, Any] | None = None, *, admin: AdminClient | None = None, timeout: float = 10.0
    ) -> RecordLimits:
        """Read the topics' `max.message.bytes` and compute the limits (blocking).

        Args:
            producer_config: extra producer options whose `message.max.bytes` counts too.
            admin: an admin client to reuse.
            timeout: seconds to wait for the broker.

        Raises:
            KafkaSetupError: the topic configs cannot be read and no `max_value_bytes` was given.
        """
        try:
            topic_limits = topic_max_bytes(
                admin or admin_client(self.client_config()), self.topics.partitioned(), timeout
            )
        except KafkaSetupError:
            if self.max_value_bytes is None:
                raise
            topic_limits = dict.fromkeys(self.topics.partitioned(), TOPIC_DEFAULT_MAX_BYTES)
        return RecordLimits.compute(
            topic_limits,
            producer_max_bytes=producer_max_bytes(self.kafka_config, producer_config),
            max_value_bytes=self.max_value_bytes,
        )

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka config for a new client: bootstrap servers, pass-through options, overrides.

        librdkafka's log lines go to Python logging (`grctl.kafka.logs`) unless the options
        name a `logger` of their own.
        """
        cfg: dict[str, Any] = {"bootstrap.servers": self.servers, "logger": LIBRDKAFKA_LOGGER}
        cfg.update(self.kafka_config)
        cfg.update(overrides)
        return cfg

    @staticmethod
    def reset() -> None:
        """Compatibility no-op: connections are not process-wide singletons here."""

    async def close(self) -> None:
        """Nothing to release: clients own their Kafka handles."""

    def __repr__(self) -> str:
        return f"Connection(servers={self.servers!r}, namespace={self.namespace!r})"
