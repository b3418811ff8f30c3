"""Broker faults on a secured 3-node cluster (issue 31, item 4): re-authentication and TLS after a broker returns.

The cluster is ``grctl dev kafka start --brokers 3 --secure`` (cluster ``test-secure3``, ports
29600..29608, three per node): clients on SASL_SSL with SCRAM-SHA-512, a client-certificate (mTLS)
listener that is also the inter-broker listener, an SSL controller quorum with client
certificates, each node a certificate of its own from the cluster's CA, the StandardAuthorizer.
No principal of the load is a super user: each holds only its namespace's ACLs
(`grctl.kafka.acls`).

Each test runs the mixed load of tests/faults/harness.py and checks what the broker-fault suite
checks (every run's result and history, `verify_namespace` clean, nothing lost or doubled), and
records the figures in build/test-output/faults/secure-*.json:

- the leader of most of the namespace's partitions is SIGKILLed and comes back 15 s later; while
  it is gone, a surviving broker's certificate is re-issued (new key, same CA) and reloaded
  live, through a dynamic ``listener.name.<listener>.ssl.keystore.location`` update of its
  client and inter-broker listeners;
- a rolling restart of all three brokers, each given a re-issued certificate while it is down
  (issued beforehand, moved into place), with one worker on SCRAM and one on a client
  certificate (mTLS).

After each certificate change the test reads the certificate the broker serves on its listeners
and requires the new one. Marked ``cluster``, like the other 3-node suites.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-export
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from grctl.dev import kafka as local_kafka
from grctl.dev import secure
from grctl.kafka.acls import Role, namespace_acls
from tests.conftest import LocalCluster
from tests.faults.harness import FaultContext, env_scale, run_with_fault
from tests.faults.test_broker_faults import DOWN_S, busiest_leader, namespace, wait_for_first_completions

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.crash, pytest.mark.timeout(480)]

SECURE3_NAME = "test-secure3"
SECURE3_PORT = 29600  # node i: 29600 + 3*(i-1) SASL_SSL, +1 controller, +2 mTLS
#: The load's offered rate: TLS costs CPU that the three brokers, workers and load share on 2 cores.
RATE = 20.0
#: The rolling restart's offered rate: a secured node took 20-80 s to restart here with 20 runs/s
#: offered on a busy machine. The load of both tests goes on until the fault has ended.
ROLLING_RATE = 12.0
#: How long a new credential, ACL or certificate may take to reach every broker.
PROPAGATION_S = 30.0


@dataclass
class SecureCluster3:
    cluster: LocalCluster
    files: secure.SecureFiles
    admin: AdminClient
    java: str

    @property
    def mtls_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.mtls_port(n)}" for n in range(1, self.cluster.brokers + 1))

    def mtls_port(self, node_id: int) -> int:
        return self.cluster.node_port(node_id) + 2

    def controller_port(self, node_id: int) -> int:
        return self.cluster.node_port(node_id) + 1

    def user(self, name: str, namespace: str, roles: list[Role]) -> dict[str, str]:
        """A new SCRAM user holding `roles` on `namespace`, known to every broker: its client settings."""
        password = secrets.token_urlsafe(12)
        upsert = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
        )
        for fut in self.admin.alter_user_scram_credentials([upsert]).values():
            fut.result(30)
        self.grant(namespace, f"User:{name}", roles)
        cfg = secure.sasl_config(self.files, name, password)
        for node in range(1, self.cluster.brokers + 1):
            self.wait_until_authorized(f"127.0.0.1:{self.cluster.node_port(node)}", node, cfg, namespace)
        return cfg

    def certificate(self, cn: str, namespace: str, roles: list[Role]) -> dict[str, str]:
        """A client certificate for ``User:<cn>`` holding `roles` on `namespace`: its mTLS client settings."""
        cfg = secure.issue_client_certificate(self.files, cn, self.java)
        self.grant(namespace, f"User:{cn}", roles)
        for node in range(1, self.cluster.brokers + 1):
            self.wait_until_authorized(f"127.0.0.1:{self.mtls_port(node)}", node, cfg, namespace)
        return cfg

    def grant(self, namespace: str, principal: str, roles: list[Role]) -> None:
        for fut in self.admin.create_acls(namespace_acls(namespace, principal, roles)).values():
            fut.result(30)

    def wait_until_authorized(self, bootstrap: str, node_id: int, cfg: dict[str, str], namespace: str) -> None:
        """Until broker `node_id` itself authenticates `cfg` and lets it describe the namespace's topics.

        Credentials and ACLs reach each broker through the metadata log, a moment after the
        controller accepted them: a worker that met a broker without them would stop with an
        authorization error. A fresh client bootstrapped on the node alone asks it (the answer
        names the broker that gave it); a missing topic the principal may describe is "unknown",
        one it may not is "authorization failed". The namespace's ACLs were created in one
        request, so the broker has all of them once it has one.
        """
        topic = f"grctl.{namespace}.directives"

        def authorized() -> bool:
            client = AdminClient({"bootstrap.servers": bootstrap, **cfg, "log_level": 0})
            try:
                meta = client.list_topics(topic, timeout=5)
            except KafkaException:
                return False  # not authenticated (yet): the request found no broker to answer
            error = meta.topics[topic].error
            return meta.orig_broker_id == node_id and (
                error is None or error.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED
            )

        wait_for(f"broker {node_id} authorizes {cfg.get('sasl.username', 'the certificate')}", authorized)

    # Certificates --------------------------------------------------------------------------

    def stored_fingerprint(self, node_id: int) -> str:
        """SHA-256 of the certificate in node `node_id`'s keystore."""
        store = self.files.node_keystore(node_id, self.cluster.brokers)
        out = subprocess.run(
            [secure._keytool(self.java), "-exportcert", "-rfc", "-alias", secure.broker_cn(node_id, self.cluster.brokers),
             "-keystore", str(store), "-storetype", "PKCS12", "-storepass", self.files.store_password],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(out)).hexdigest()

    def served_fingerprint(self, port: int) -> str | None:
        """SHA-256 of the certificate a listener presents in a TLS handshake (None: no handshake).

        Verified against the cluster's CA and 127.0.0.1. With TLS 1.3 the client side of the
        handshake ends before the server checks the client's certificate, so the listeners that
        require one show theirs too.
        """
        context = ssl.create_default_context(cafile=str(self.files.ca_pem))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except OSError:
            return None
        return hashlib.sha256(der).hexdigest() if der else None

    def wait_until_serving(self, node_id: int, ports: list[int]) -> str:
        """Until `ports` of node `node_id` present the certificate now in its keystore; returns it."""
        want = self.stored_fingerprint(node_id)
        wait_for(
            f"node {node_id} serves its new certificate on {ports}",
            lambda: all(self.served_fingerprint(p) == want for p in ports),
        )
        return want

    def reissue(self, node_id: int, staged: bool = False) -> Path:
        """A new key and certificate for node `node_id` (same CN and SAN, same CA).

        Written over its keystore file, or with `staged` beside it (``.next``), for `deploy` to
        move into place later (keytool takes seconds; a move does not).
        """
        store = self.files.node_keystore(node_id, self.cluster.brokers)
        target = store.with_name(f"{store.name}.next") if staged else store
        old = self.stored_fingerprint(node_id)
        secure.reissue_broker_certificate(self.files, node_id, self.cluster.brokers, self.java, target)
        if not staged:
            assert self.stored_fingerprint(node_id) != old
        return target

    def deploy(self, node_id: int, staged: Path) -> None:
        """Move a staged keystore (`reissue`) over node `node_id`'s keystore file."""
        store = self.files.node_keystore(node_id, self.cluster.brokers)
        old = self.stored_fingerprint(node_id)
        staged.replace(store)
        assert self.stored_fingerprint(node_id) != old

    def reload_live(self, node_id: int) -> None:
        """Have running node `node_id` reload its keystore file on its client and inter-broker listeners.

        A per-broker dynamic update of ``listener.name.<listener>.ssl.keystore.location`` (to
        the same file): Kafka rebuilds the listener's SSL factory when the file changed, and
        keeps the connections it has. Refused if the new certificate's subject or SANs differ.
        """
        store = str(self.files.node_keystore(node_id, self.cluster.brokers))
        resource = ConfigResource(
            ResourceType.BROKER,
            str(node_id),
            incremental_configs=[
                ConfigEntry(f"listener.name.{listener}.ssl.keystore.location", store,
                            incremental_operation=AlterConfigOpType.SET)
                for listener in ("sasl_ssl", "mtls")
            ],
        )  # fmt: skip
        for fut in self.admin.incremental_alter_configs([resource]).values():
            fut.result(30)


def wait_for(what: str, check: Callable[[], bool], timeout: float = PROPAGATION_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting until {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def secure3() -> Iterator[SecureCluster3]:
    """A secured 3-node cluster from empty storage; stopped at the end if this module started it."""
    if not local_kafka.status(SECURE3_NAME).running:
        local_kafka.wipe(SECURE3_NAME)  # as cluster3: old topics slow every restart
    result = local_kafka.ensure_running(3, SECURE3_PORT, name=SECURE3_NAME, secure=True)
    files = local_kafka.cluster_secure_files(SECURE3_NAME)
    admin = AdminClient({"bootstrap.servers": result.bootstrap, **secure.admin_config(files)})
    try:
        yield SecureCluster3(
            LocalCluster(name=SECURE3_NAME, bootstrap=result.bootstrap, brokers=3),
            files,
            admin,
            local_kafka.find_java().path,
        )
    finally:
        if result.started:
            local_kafka.stop(SECURE3_NAME)


async def test_sigkill_the_leader_with_a_live_certificate_reload(secure3: SecureCluster3, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    app = await asyncio.to_thread(secure3.user, f"{ns}-app", ns, ["client", "admin"])
    worker = await asyncio.to_thread(secure3.user, f"{ns}-worker", ns, ["worker"])
    bootstrap = secure3.cluster.bootstrap

    async def fault(ctx: FaultContext) -> None:
        await wait_for_first_completions()
        victim = await asyncio.to_thread(busiest_leader, secure3.admin, ns)
        ctx.mark()
        await asyncio.to_thread(secure3.cluster.kill_node, victim)
        t_killed = time.monotonic()
        # While it is gone, a survivor's certificate changes under the clients' feet.
        survivor = next(n for n in range(1, 4) if n != victim)
        await asyncio.to_thread(secure3.reissue, survivor)
        await asyncio.to_thread(secure3.reload_live, survivor)
        await asyncio.to_thread(
            secure3.wait_until_serving, survivor, [secure3.cluster.node_port(survivor), secure3.mtls_port(survivor)]
        )
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - t_killed)))  # the outage's length
        await asyncio.to_thread(secure3.cluster.restart_node, victim)

    await run_with_fault(bootstrap, ns, tmp_path, fault, name="secure-leader-kill", rate=RATE,
                         duration_s=25 * env_scale(), load_while_fault=True, kafka_config=app,
                         worker_endpoints=[(bootstrap, worker)])  # fmt: skip


async def test_rolling_restart_with_new_certificates(secure3: SecureCluster3, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    app = await asyncio.to_thread(secure3.user, f"{ns}-app", ns, ["client", "admin"])
    scram_worker = await asyncio.to_thread(secure3.user, f"{ns}-worker", ns, ["worker"])
    cert_worker = await asyncio.to_thread(secure3.certificate, f"{ns}-svc", ns, ["worker"])
    nodes = range(1, secure3.cluster.brokers + 1)
    staged = {node: await asyncio.to_thread(secure3.reissue, node, True) for node in nodes}
    served: list[int] = []

    async def fault(ctx: FaultContext) -> None:
        t_load = time.monotonic()
        await wait_for_first_completions()
        for node in nodes:
            ctx.mark()
            print(f"rolling restart: node {node} down at +{time.monotonic() - t_load:.1f} s of the load")
            await asyncio.to_thread(secure3.cluster.kill_node, node)
            await asyncio.to_thread(secure3.deploy, node, staged[node])  # read by the node when it starts
            await asyncio.to_thread(secure3.cluster.restart_node, node)
            ports = [secure3.cluster.node_port(node), secure3.mtls_port(node), secure3.controller_port(node)]
            await asyncio.to_thread(secure3.wait_until_serving, node, ports)
            served.append(node)
            print(f"rolling restart: node {node} back, new certificate served, at +{time.monotonic() - t_load:.1f} s")

    report = await run_with_fault(
        secure3.cluster.bootstrap, ns, tmp_path, fault, name="secure-rolling-restart", rate=ROLLING_RATE,
        duration_s=20 * env_scale(), load_while_fault=True, workers_total=2, kafka_config=app,
        worker_endpoints=[(secure3.cluster.bootstrap, scram_worker), (secure3.mtls_bootstrap, cert_worker)],
    )  # fmt: skip
    assert report.faults == 3
    assert served == [1, 2, 3]
