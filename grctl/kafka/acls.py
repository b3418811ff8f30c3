"""The Kafka ACLs a principal needs for one grctl namespace, by role.

Everything of namespace NS is named with the prefix ``grctl.NS.``: its topics
(``grctl.NS.directives``, ``.history``, ``.state``, ``.replies``, ``.dead-letter``, ``.config``),
its consumer groups (``grctl.NS.workers``, a client's ``grctl.NS.client.<id>``, the settings
reader's ``grctl.NS.settings``) and its workers' transactional ids (``grctl.NS.<instance>``). So
three PREFIXED resource patterns cover a namespace, and no ACL of one namespace reaches another
(a namespace whose name starts with another's, ``ns`` and ``ns2``, does not: the prefix ends with
the dot).

Roles (what each operation is for):

- ``worker``: topics Read (directives, state restore, config), Write (every record it produces),
  Describe (metadata, offsets), DescribeConfigs (record size limits, retention), Create (the
  namespace's topics on first start, unless an admin made them); groups Read (the workers' group
  and its transactional offset commits) and Describe; transactional ids Write and Describe (its
  transactions).
- ``client`` (a `Client`, the CLI's run commands, `grctl verify`, `grctl ui`): topics Read
  (replies, history for listing and checks, config), Write (directives), Describe,
  DescribeConfigs; groups Read (its own reader's group) and Describe (it looks for the workers'
  group to fail fast when no worker runs).
- ``admin`` (``grctl namespace create/set/delete``): topics Create, AlterConfigs, DescribeConfigs,
  Describe, Delete; groups Describe, Delete.

No cluster-level ACL is needed (Kafka 3+ lets a producer with Write on a topic be idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from grctl.errors import GrctlError

Role = Literal["worker", "client", "admin"]
ROLES: Final[tuple[Role, ...]] = ("worker", "client", "admin")

_T, _G, _X = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
_OPS: Final[dict[Role, tuple[tuple[ResourceType, AclOperation], ...]]] = {
    "worker": (
        (_T, AclOperation.READ),
        (_T, AclOperation.WRITE),
        (_T, AclOperation.DESCRIBE),
        (_T, AclOperation.DESCRIBE_CONFIGS),
        (_T, AclOperation.CREATE),
        (_G, AclOperation.READ),
        (_G, AclOperation.DESCRIBE),
        (_X, AclOperation.WRITE),
        (_X, AclOperation.DESCRIBE),
    ),
    "client": (
        (_T, AclOperation.READ),
        (_T, AclOperation.WRITE),
        (_T, AclOperation.DESCRIBE),
        (_T, AclOperation.DESCRIBE_CONFIGS),
        (_G, AclOperation.READ),
        (_G, AclOperation.DESCRIBE),
    ),
    "admin": (
        (_T, AclOperation.CREATE),
        (_T, AclOperation.ALTER_CONFIGS),
        (_T, AclOperation.DESCRIBE_CONFIGS),
        (_T, AclOperation.DESCRIBE),
        (_T, AclOperation.DELETE),
        (_G, AclOperation.DESCRIBE),
        (_G, AclOperation.DELETE),
    ),
}


def namespace_prefix(namespace: str) -> str:
    """The prefix of every topic, group and transactional id of `namespace`."""
    return f"grctl.{namespace}."


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
    seen: set[tuple[ResourceType, AclOperation]] = set()
    out: list[AclBinding] = []
    for role in roles:
        if role not in _OPS:
            raise GrctlError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        for rtype, op in _OPS[role]:
            if (rtype, op) in seen:
                continue
            seen.add((rtype, op))
            out.append(
                AclBinding(rtype, prefix, ResourcePatternType.PREFIXED, principal, host, op, AclPermissionType.ALLOW)
            )
    return out


def acl_lines(bindings: Iterable[AclBinding]) -> list[str]:
    """One readable line per binding: ``ALLOW User:a READ on TOPIC prefixed 'grctl.ns.' from *``."""
    return [
        f"{b.permission_type.name} {b.principal} {b.operation.name} on {b.restype.name} "
        f"{b.resource_pattern_type.name.lower()} {b.name!r} from {b.host}"
        for b in bindings
    ]


def kafka_acls_commands(namespace: str, principal: str, roles: Iterable[Role] = ("worker",)) -> list[str]:
    """The same bindings as ``kafka-acls.sh`` commands, one per resource type."""
    prefix = namespace_prefix(namespace)
    flag = {_T: "--topic", _G: "--group", _X: "--transactional-id"}
    by_type: dict[ResourceType, list[str]] = {}
    for b in namespace_acls(namespace, principal, roles):
        by_type.setdefault(b.restype, []).append(
            b.operation.name.replace("_", "").title().replace("configs", "Configs")
        )
    return [
        f"kafka-acls.sh --bootstrap-server $SERVERS --command-config admin.properties --add "
        f"--allow-principal {principal} {' '.join('--operation ' + op for op in ops)} "
        f"{flag[rtype]} {prefix} --resource-pattern-type prefixed"
        for rtype, ops in by_type.items()
    ]


def authorization_hint(namespace: str, role: Role) -> str:
    """What to tell a principal that was refused: the command that grants its role."""
    return (
        f"the principal this process authenticates as lacks ACLs for namespace {namespace!r}: an admin grants "
        f"them with `grctl namespace acls {namespace} --principal User:NAME --role {role} --apply` "
        "(docs/security.md lists them)"
    )
