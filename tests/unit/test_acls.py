"""The ACLs of a namespace and the errors that name a missing one (no broker: pure logic)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from grctl.errors import GrctlError, KafkaAuthorizationError
from grctl.kafka.acls import (
    acl_lines,
    authorization_error,
    is_refusal,
    kafka_acls_commands,
    namespace_acls,
    topic_refusal,
)


def grants(namespace: str, roles: list) -> set[tuple[str, str, str, str]]:
    return {
        (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
        for b in namespace_acls(namespace, "User:alice", roles)
    }


def test_worker_role_is_three_prefixed_patterns_of_the_namespace() -> None:
    assert grants("orders", ["worker"]) == {
        ("TOPIC", "grctl.orders.", "PREFIXED", "READ"),
        ("TOPIC", "grctl.orders.", "PREFIXED", "WRITE"),
        ("TOPIC", "grctl.orders.", "PREFIXED", "DESCRIBE_CONFIGS"),
        ("TOPIC", "grctl.orders.", "PREFIXED", "CREATE"),
        ("GROUP", "grctl.orders.", "PREFIXED", "READ"),
        ("TRANSACTIONAL_ID", "grctl.orders.", "PREFIXED", "WRITE"),
    }


def test_client_role_has_no_create_and_no_transactions() -> None:
    ops = grants("orders", ["client"])
    assert ("TOPIC", "grctl.orders.", "PREFIXED", "CREATE") not in ops
    assert not any(r == "TRANSACTIONAL_ID" for r, *_ in ops)
    assert ("GROUP", "grctl.orders.", "PREFIXED", "READ") in ops


def test_roles_combine_without_duplicates_and_every_binding_allows_the_principal() -> None:
    bindings = namespace_acls("ns", "User:bob", ["worker", "client", "admin"])
    keys = [(b.restype, b.operation) for b in bindings]
    assert len(keys) == len(set(keys))
    assert {b.principal for b in bindings} == {"User:bob"}
    assert {b.permission_type.name for b in bindings} == {"ALLOW"}
    assert {b.host for b in bindings} == {"*"}


def test_the_prefix_ends_with_a_dot_so_a_longer_namespace_name_is_not_covered() -> None:
    (prefix,) = {b.name for b in namespace_acls("ns", "User:a")}
    assert prefix == "grctl.ns."
    assert not "grctl.ns2.directives".startswith(prefix)


def test_bad_principal_and_role_are_refused_with_the_fix() -> None:
    with pytest.raises(GrctlError, match="write it as User:alice"):
        namespace_acls("ns", "alice")
    with pytest.raises(GrctlError, match="unknown role 'owner'"):
        namespace_acls("ns", "User:a", ["owner"])  # type: ignore[list-item]


def test_lines_and_kafka_acls_commands_list_the_same_operations() -> None:
    lines = acl_lines("ns", "User:a", ["worker"])
    assert lines[0] == "ALLOW User:a on topics prefixed 'grctl.ns.': Read, Write, DescribeConfigs, Create"
    cmds = kafka_acls_commands("ns", "User:a", ["worker"])
    assert len(cmds) == 3
    assert "--transactional-id grctl.ns. --resource-pattern-type prefixed" in cmds[2]
    assert "--operation Read --operation Write --operation DescribeConfigs --operation Create" in cmds[0]


@pytest.mark.parametrize(
    ("code", "resource", "needed"),
    [
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "groups", "Read on groups prefixed 'grctl.ns.'"),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional ids",
         "Write on transactional ids prefixed 'grctl.ns.'"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "topics", "Read, Write, DescribeConfigs, Create on topics"),
    ],
)  # fmt: skip
def test_a_refusal_in_an_exception_chain_becomes_an_error_naming_the_acl(code: int, resource: str, needed: str) -> None:
    try:
        try:
            raise KafkaException(KafkaError(code))
        except KafkaException as inner:
            raise RuntimeError("session failed") from inner
    except RuntimeError as outer:
        refused = authorization_error(outer, "ns", "worker")
    assert isinstance(refused, KafkaAuthorizationError)
    assert refused.resource == resource
    assert needed in str(refused)
    assert "grctl namespace acls ns --principal User:NAME --role worker --apply" in str(refused)


def test_authentication_failures_point_at_the_credentials() -> None:
    refused = authorization_error(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED), "ns", "client", "connecting")
    assert refused is not None and refused.resource == "authentication"
    assert "sasl.username and sasl.password" in str(refused)


def test_other_errors_are_not_refusals() -> None:
    assert authorization_error(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)), "ns", "worker") is None
    assert authorization_error(ValueError("x"), "ns", "worker") is None
    assert not is_refusal(KafkaError(KafkaError.NOT_COORDINATOR))
    assert is_refusal(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))


def test_a_hidden_topic_names_both_roles() -> None:
    text = str(topic_refusal("ns", "grctl.ns.directives"))
    assert "a worker needs Read, Write, DescribeConfigs, Create, a client Read, Write, DescribeConfigs" in text
