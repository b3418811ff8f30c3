"""A secured cluster (issue 15, part 5): SASL_SSL with SCRAM-SHA-512, mTLS, the StandardAuthorizer.

The module starts ``grctl dev kafka start --secure`` (cluster ``test-secure``, ports 29292..29294)
and, as its admin super user, creates SCRAM users, client certificates and exactly the ACLs that
`grctl.kafka.acls` (and docs/security.md, and ``grctl namespace acls``) lists for a namespace.
A worker and a client whose principals hold only those ACLs run workflows end to end; a principal
without them gets a `KafkaAuthorizationError` naming what is missing, in seconds, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-export
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from grctl import Client, Connection, Worker
from grctl.dev import kafka as local_kafka
from grctl.dev import secure
from grctl.errors import KafkaAuthorizationError, NoWorkerAnsweredError
from grctl.kafka.acls import Role, namespace_acls
from tests.cli.conftest import invoke, start_worker
from tests.secure.flows import greet
from tests.support.workers import stop_workers

pytestmark = [pytest.mark.kafka]

SECURE_NAME = "test-secure"
SECURE_PORT = 29292


@dataclass
class SecureCluster:
    sasl: str  # the SASL_SSL bootstrap
    mtls: str  # the mTLS listener
    files: secure.SecureFiles
    admin: AdminClient

    def user(self, name: str) -> dict[str, str]:
        """A new SCRAM user: its client settings."""
        password = secrets.token_urlsafe(12)
        upsert = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
        )
        for fut in self.admin.alter_user_scram_credentials([upsert]).values():
            fut.result(30)
        return secure.sasl_config(self.files, name, password)

    def certificate(self, cn: str) -> dict[str, str]:
        return secure.issue_client_certificate(self.files, cn, local_kafka.find_java().path)

    def grant(self, namespace: str, principal: str, roles: list[Role]) -> None:
        for fut in self.admin.create_acls(namespace_acls(namespace, principal, roles)).values():
            fut.result(30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SecureCluster]:
    result = local_kafka.ensure_running(1, SECURE_PORT, name=SECURE_NAME, secure=True)
    files = local_kafka.cluster_secure_files(SECURE_NAME)
    admin = AdminClient({"bootstrap.servers": result.bootstrap, **secure.admin_config(files)})
    try:
        yield SecureCluster(result.bootstrap, f"127.0.0.1:{SECURE_PORT + 2}", files, admin)
    finally:
        if result.started:
            local_kafka.stop(SECURE_NAME)


def new_namespace() -> str:
    return f"sec{secrets.token_hex(4)}"


async def connect(servers: str, namespace: str, cfg: dict[str, str]) -> Connection:
    return await Connection.connect(servers, namespace, kafka_config=cfg, partitions=2, timeout=15)


@contextlib.asynccontextmanager
async def running_worker(conn: Connection, state_dir: Path) -> AsyncIterator[Worker]:
    worker = Worker([greet], conn, state_dir=state_dir)
    task = asyncio.create_task(worker.run())
    try:
        await worker.wait_until_ready(60)
        yield worker
    finally:
        # A worker that crashed or hung fails the test (tests.support.workers).
        await stop_workers([(worker.worker_name, functools.partial(worker.stop, shutdown_timeout=2.0), task)])


async def greet_end_to_end(client_conn: Connection, wf_id: str) -> None:
    client = Client(client_conn)
    try:
        handle = await client.start_workflow("SecureGreet", wf_id, "ada")
        await client.send_event(wf_id, "approve", {"by": "bob"})
        assert await handle.result(timeout=60) == "hello ada, approved by bob"
        info = await client.describe(wf_id)
        assert info.status.value == "completed"
    finally:
        await client.close()


async def test_scram_worker_and_client_with_only_their_namespace_acls_run_workflows(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    ns = new_namespace()
    worker_cfg, client_cfg = cluster.user(f"{ns}-worker"), cluster.user(f"{ns}-api")
    cluster.grant(ns, f"User:{ns}-worker", ["worker"])
    cluster.grant(ns, f"User:{ns}-api", ["client"])
    worker_conn = await connect(cluster.sasl, ns, worker_cfg)  # the worker role creates the topics
    async with running_worker(worker_conn, tmp_path / "w"):
        await greet_end_to_end(await connect(cluster.sasl, ns, client_cfg), "greet-1")
    # The ACLs are the namespace's only: another namespace is refused, with what is missing.
    with pytest.raises(KafkaAuthorizationError, match=rf"on topics prefixed 'grctl\.other{ns}\.'") as exc:
        await connect(cluster.sasl, f"other{ns}", worker_cfg)
    assert exc.value.resource == "topics"


async def test_mtls_principal_from_its_certificate_runs_workflows(cluster: SecureCluster, tmp_path: Path) -> None:
    ns = new_namespace()
    cfg = cluster.certificate(f"{ns}-svc")
    cluster.grant(ns, f"User:{ns}-svc", ["worker", "client"])
    conn = await connect(cluster.mtls, ns, cfg)
    async with running_worker(conn, tmp_path / "w"):
        await greet_end_to_end(conn, "greet-mtls")


async def test_a_principal_without_acls_is_told_what_is_missing(cluster: SecureCluster) -> None:
    ns = new_namespace()
    cfg = cluster.user(f"{ns}-nobody")
    for made_by_admin in (False, True):  # Kafka hides a topic the principal may not describe
        if made_by_admin:
            await connect(cluster.sasl, ns, secure.admin_config(cluster.files))
        with pytest.raises(KafkaAuthorizationError) as exc:
            await connect(cluster.sasl, ns, cfg)
        text = str(exc.value)
        assert f"on topics prefixed 'grctl.{ns}.': a worker needs Read, Write, DescribeConfigs, Create" in text
        assert "a client Read, Write, DescribeConfigs" in text
        assert f"grctl namespace acls {ns}" in text
    # With the topic ACLs but no Create, a missing namespace is named as such.
    other = new_namespace()
    cluster.grant(other, f"User:{ns}-nobody", ["client"])
    with pytest.raises(KafkaAuthorizationError, match=rf"lacks Create on topics prefixed 'grctl\.{other}\.'"):
        await connect(cluster.sasl, other, cfg)


async def test_a_worker_without_the_transactional_id_acl_stops_naming_it(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    ns = new_namespace()
    cfg = cluster.user(f"{ns}-half")
    cluster.grant(ns, f"User:{ns}-half", ["client"])  # topics and groups, no transactional ids
    conn = await connect(cluster.sasl, ns, secure.admin_config(cluster.files))  # topics made by the admin
    conn = await connect(cluster.sasl, ns, cfg)
    worker = Worker([greet], conn, state_dir=tmp_path / "w")
    task = asyncio.create_task(worker.run())
    with pytest.raises(KafkaAuthorizationError, match=rf"Write on transactional ids prefixed 'grctl\.{ns}\.'"):
        await worker.wait_until_ready(60)
    with pytest.raises(KafkaAuthorizationError):
        await asyncio.wait_for(task, 30)  # run() ended with it too: no restart loop


async def test_a_client_without_the_group_acl_is_told_to_grant_it(cluster: SecureCluster) -> None:
    ns = new_namespace()
    cfg = cluster.user(f"{ns}-nogroup")
    for b in namespace_acls(ns, f"User:{ns}-nogroup", ["client"]):
        if b.restype.name != "GROUP":
            cluster.admin.create_acls([b])[b].result(30)
    await connect(cluster.sasl, ns, secure.admin_config(cluster.files))
    client = Client(await connect(cluster.sasl, ns, cfg))
    try:
        # Whichever comes first: the reader refused its group, or the workers' group looks empty
        # (ListGroups hides a group the principal may not describe); both name the ACL.
        with pytest.raises(
            (KafkaAuthorizationError, NoWorkerAnsweredError), match=rf"Read on groups prefixed 'grctl\.{ns}\.'"
        ):
            await client.start_workflow("SecureGreet", "g-1", "ada")
    finally:
        await client.close()


async def test_wrong_credentials_are_named_as_such(cluster: SecureCluster) -> None:
    cfg = {**cluster.user(f"{new_namespace()}-pw"), "sasl.password": "not-the-password"}
    with pytest.raises(KafkaAuthorizationError, match=r"sasl\.username and sasl\.password") as exc:
        await connect(cluster.sasl, new_namespace(), cfg)
    assert exc.value.resource == "authentication"


def test_cli_with_kafka_options_grants_serves_and_runs(cluster: SecureCluster, tmp_path: Path) -> None:
    ns = new_namespace()
    admin_args = ["--servers", cluster.sasl, "--kafka-config", str(cluster.files.admin_properties)]
    user = f"{ns}-cli"
    cfg = cluster.user(user)
    granted = invoke(*admin_args, "namespace", "acls", ns, "--principal", f"User:{user}", "--apply", "--json")
    assert granted.exit_code == 0, granted.stderr
    assert granted.json()["applied"] is True
    created = invoke(*admin_args, "namespace", "create", ns, "--partitions", "2")
    assert created.exit_code == 0, created.stderr
    x_args = ["--servers", cluster.sasl, *(a for k, v in cfg.items() for a in ("-X", f"{k}={v}"))]
    worker = start_worker(ns, tmp_path / "w", "tests.secure.flows:WORKFLOWS", x_args)
    try:
        started = invoke(*x_args, "-n", ns, "workflow", "start", "-t", "SecureGreet", "-i", "cli-1", "-I", '"ada"')
        assert started.exit_code == 0, started.stderr
        sent = invoke(*x_args, "-n", ns, "workflow", "send", "cli-1", "approve", "--payload", '{"by": "cli"}')
        assert sent.exit_code == 0, sent.stderr
        result = invoke(*x_args, "-n", ns, "workflow", "result", "cli-1", "--json")
        assert result.exit_code == 0, result.stderr
        assert "hello ada, approved by cli" in result.stdout
    finally:
        assert worker.stop() == 0, "\n".join(worker.lines)
    refused = invoke("--servers", cluster.sasl, *(a for k, v in cfg.items() for a in ("-X", f"{k}={v}")),
                     "-n", f"x{ns}", "workflow", "list")  # fmt: skip
    assert refused.exit_code == 1
    assert "lacks" in refused.stderr and f"grctl namespace acls x{ns}" in refused.stderr
