"""The Kafka ACLs a principal needs for one grctl namespace, by role.

Everything of namespace NS is named with the prefix ``grctl.NS.``: its topics
(``grctl.NS.directives``, ``.history``, ``.state``, ``.replies``, ``.dead-letter``, ``.config``),
its consumer groups (``grctl.NS.workers``, a client's ``grctl.NS.client.<id>``, the settings
reader's ``grctl.NS.settings``) and its workers' transactional ids (``grctl.NS.<instance>``). So
three PREFIXED resource patterns cover a namespace, and no ACL of one namespace reaches another
(a namespace whose name starts with another's, ``ns`` and ``ns2``, does not: the prefix ends with
the dot).

Roles (what each operation is for; Kafka implies Describe from Read, Write and Delete, and
DescribeConfigs from AlterConfigs):

- ``worker``: topics Read (directives, state restore, config), Write (every record it produces),
  DescribeConfigs (record size limits, retention), Create (the namespace's topics on its first
  start; not needed when an admin made them); groups Read (the workers' group, its transactional
  offset commits); transactional ids Write (its transactions).
- ``client`` (a `Client`, the CLI's run commands, `grctl verify`, `grctl ui`): topics Read
  (replies, history, config), Write (directives), DescribeConfigs (size limits); groups Read (its
  reader's group, and seeing the workers' group to fail fast when no worker runs).
- ``admin`` (``grctl namespace create/set/delete/describe``): topics Create, AlterConfigs,
  Delete, Read and Write (the settings record); groups Delete.

No cluster-level ACL is needed (Kafka 3+ lets a producer with Write on a topic be idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-export
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from grctl.errors import GrctlError, KafkaAuthorizationError

Role = Literal["worker", "client", "admin"]
ROLES: Final[tuple[Role, ...]] = ("worker", "client", "admin")

_T, _G, _X = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
_OPS: Final[dict[Role, tuple[tuple[ResourceType, AclOperation], ...]]] = {
    # Kafka implies Describe from Read, Write or Delete, and DescribeConfigs from AlterConfigs.
    "worker": (
        (_T, AclOperation.READ),
        (_T, AclOperation.WRITE),
        (_T, AclOperation.DESCRIBE_CONFIGS),
        (_T, AclOperation.CREATE),
        (_G, AclOperation.READ),
        (_X, AclOperation.WRITE),
    ),
    "client": (
        (_T, AclOperation.READ),
        (_T, AclOperation.WRITE),
        (_T, AclOperation.DESCRIBE_CONFIGS),
        (_G, AclOperation.READ),
    ),
    "admin": (
        (_T, AclOperation.CREATE),
        (_T, AclOperation.ALTER_CONFIGS),
        (_T, AclOperation.DELETE),
        (_T, AclOperation.READ),
        (_T, AclOperation.WRITE),
        (_G, AclOperation.DELETE),
    ),
}


def namespace_prefix(namespace: str) -> str:
    """The prefix of every topic, group and transactional id of `namespace`."""
    return f"grctl.{namespace}."


def _grants(roles: Iterable[Role]) -> list[tuple[ResourceType, AclOperation]]:
    seen: list[tuple[ResourceType, AclOperation]] = []
    for role in roles:
        if role not in _OPS:
            raise GrctlError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        seen.extend(g for g in _OPS[role] if g not in seen)
    return seen


def namespace_acls(
    namespace: str, principal: str, roles: Iterable[Role] = ("worker",), host: str = "*"
) -> list[AclBinding]:
    """The ALLOW bindings that let `principal` act in `namespace` in each of `roles`.

    Args:
        namespace: the grctl namespace.
        principal: a Kafka principal, ``User:NAME`` (a SCRAM user, or a certificate's mapped name).
        roles: any of "worker", "client", "admin".
        host: the host the principal connects from ("*": any).

    Raises:
        GrctlError: an unknown role, or a principal without a type.
    """
    if ":" not in principal:
        raise GrctlError(f"principal {principal!r} has no type: write it as User:{principal}")
    prefix = namespace_prefix(namespace)
    return [
        AclBinding(rtype, prefix, ResourcePatternType.PREFIXED, principal, host, op, AclPermissionType.ALLOW)
        for rtype, op in _grants(roles)
    ]


#: kafka-acls.sh's names of the operations and resource options.
_CLI_OP: Final = {
    AclOperation.READ: "Read", AclOperation.WRITE: "Write", AclOperation.DESCRIBE: "Describe",
    AclOperation.DESCRIBE_CONFIGS: "DescribeConfigs", AclOperation.ALTER_CONFIGS: "AlterConfigs",
    AclOperation.CREATE: "Create", AclOperation.DELETE: "Delete",
}  # fmt: skip
_CLI_RESOURCE: Final = {_T: "--topic", _G: "--group", _X: "--transactional-id"}
_NAME: Final = {_T: "topics", _G: "groups", _X: "transactional ids"}


def acl_lines(namespace: str, principal: str, roles: Iterable[Role] = ("worker",)) -> list[str]:
    """One readable line per resource type: ``User:a on topics prefixed 'grctl.ns.': Read, Write``."""
    prefix = namespace_prefix(namespace)
    return [f"ALLOW {principal} on {_NAME[t]} prefixed {prefix!r}: {', '.join(ops)}" for t, ops in _by_type(roles)]


def kafka_acls_commands(namespace: str, principal: str, roles: Iterable[Role] = ("worker",)) -> list[str]:
    """The same bindings as ``kafka-acls.sh`` commands, one per resource type."""
    prefix = namespace_prefix(namespace)
    return [
        f"kafka-acls.sh --bootstrap-server $SERVERS --command-config admin.properties --add "
        f"--allow-principal {principal} {' '.join('--operation ' + op for op in ops)} "
        f"{_CLI_RESOURCE[rtype]} {prefix} --resource-pattern-type prefixed"
        for rtype, ops in _by_type(roles)
    ]


def _by_type(roles: Iterable[Role]) -> list[tuple[ResourceType, list[str]]]:
    """The roles' operations (kafka-acls.sh names) per resource type, in the order they are granted."""
    by_type: dict[ResourceType, list[str]] = {}
    for rtype, op in _grants(roles):
        by_type.setdefault(rtype, []).append(_CLI_OP[op])
    return list(by_type.items())


def _ops_on(role: Role, rtype: ResourceType) -> str:
    """The role's operations on one resource type, as kafka-acls.sh names them ("Read, Write")."""
    return ", ".join(dict(_by_type([role])).get(rtype, []))


#: Kafka's refusals, by error code: what was refused, and which ACL of the role grants it.
_REFUSALS: Final = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: ("topics", _T),
    KafkaError.GROUP_AUTHORIZATION_FAILED: ("groups", _G),
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ("transactional ids", _X),
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: ("cluster", None),
}
#: Authentication failures (wrong SCRAM password, unknown user, refused certificate).
_AUTHENTICATION: Final = frozenset({KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION})


def kafka_error_of(exc: BaseException | KafkaError | None) -> KafkaError | None:
    """The librdkafka error inside `exc` or any exception it was raised from."""
    seen = 0
    cur: BaseException | KafkaError | None = exc
    while cur is not None and seen < 20:
        if isinstance(cur, KafkaError):
            return cur
        if isinstance(cur, KafkaException) and cur.args and isinstance(cur.args[0], KafkaError):
            return cur.args[0]
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def is_refusal(err: KafkaError | None) -> bool:
    """Whether `err` is an authorization or authentication refusal (no retry fixes it)."""
    return err is not None and (err.code() in _REFUSALS or err.code() in _AUTHENTICATION)


_DOING: Final = {
    "topics": "a request on the namespace's topics",
    "groups": "a request on the namespace's consumer groups",
    "transactional ids": "the worker's transactions (InitProducerId)",
    "cluster": "a cluster request",
}


def authorization_error(
    cause: BaseException | KafkaError | None, namespace: str, role: Role, doing: str | None = None
) -> KafkaAuthorizationError | None:
    """A `KafkaAuthorizationError` naming the missing ACLs if `cause` is Kafka refusing this principal.

    Args:
        cause: an exception (its chain is searched) or a KafkaError.
        namespace: the grctl namespace.
        role: the role the process acts in ("worker", "client", "admin").
        doing: what was refused, for the message (default: by the refused resource).

    Returns:
        The error to raise, or None if `cause` is no refusal.
    """
    if isinstance(cause, KafkaAuthorizationError):
        return cause
    err = kafka_error_of(cause)
    if err is None or not is_refusal(err):
        return None
    if err.code() in _AUTHENTICATION:
        return KafkaAuthorizationError(
            f"Kafka did not authenticate this process while {doing or 'connecting'} ({err.str()}): "
            "check sasl.username and "
            "sasl.password (SCRAM), or the client certificate and ssl.ca.location (mTLS)",
            resource="authentication",
            namespace=namespace,
        )
    resource, rtype = _REFUSALS[err.code()]
    doing = doing or _DOING[resource]
    prefix = namespace_prefix(namespace)
    if rtype is None:
        needed = "a cluster-level ACL (grctl needs none on Kafka 3+: is the broker older?)"
    else:
        needed = f"{_ops_on(role, rtype)} on {resource} prefixed {prefix!r}"
    return KafkaAuthorizationError(
        f"Kafka refused {doing} ({err.name()}): the principal this process authenticates as lacks the {role} "
        f"ACLs of namespace {namespace!r}: {needed}. An admin grants them with `grctl namespace acls {namespace} "
        f"--principal User:NAME --role {role} --apply` (docs/security.md lists every ACL)",
        resource=resource,
        namespace=namespace,
    )


def topic_refusal(namespace: str, topic: str) -> KafkaAuthorizationError:
    """Kafka hid `topic` from this principal (it answers so whether the topic exists or not)."""
    prefix = namespace_prefix(namespace)
    return KafkaAuthorizationError(
        f"Kafka refused to describe topic {topic!r} (TOPIC_AUTHORIZATION_FAILED): the principal this process "
        f"authenticates as lacks the ACLs of namespace {namespace!r} on topics prefixed {prefix!r}: a worker needs "
        f"{_ops_on('worker', _T)}, a client {_ops_on('client', _T)} (and groups and transactional ids too). "
        f"An admin grants them with `grctl namespace acls {namespace} --principal User:NAME --role worker|client "
        "--apply` (docs/security.md lists every ACL)",
        resource="topics",
        namespace=namespace,
    )
