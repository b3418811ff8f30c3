"""The settings of a secured local cluster (no JVM: what `grctl dev kafka start --secure` writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grctl.dev import kafka
from grctl.dev.secure import (
    ADMIN_USER,
    BROKER_CN,
    SecureFiles,
    admin_config,
    broker_cn,
    issue_client_certificate,
    mtls_config,
    reissue_broker_certificate,
    scram_format_args,
)


def files_with_secrets(tmp_path: Path) -> SecureFiles:
    files = SecureFiles(tmp_path / "secure")
    files.dir.mkdir()
    files.secrets_file.write_text(json.dumps({"store_password": "sp", "admin_password": "ap"}))
    return files


def test_a_secure_spec_has_one_node_with_an_mtls_port(tmp_path: Path) -> None:
    spec = kafka.ClusterSpec(name="s", brokers=1, port=29000, cluster_id="x", kafka_version="4", secure=True)
    (node,) = spec.nodes
    assert (node.port, node.controller_port, node.mtls_port) == (29000, 29001, 29002)
    with pytest.raises(kafka.LocalKafkaError, match="invalid port"):
        kafka.ClusterSpec(name="s", brokers=1, port=65534, cluster_id="x", kafka_version="4", secure=True)


def test_a_secure_spec_of_three_nodes_takes_three_ports_per_node() -> None:
    spec = kafka.ClusterSpec(name="s", brokers=3, port=29600, cluster_id="x", kafka_version="4", secure=True)
    assert [(n.port, n.controller_port, n.mtls_port) for n in spec.nodes] == [
        (29600, 29601, 29602), (29603, 29604, 29605), (29606, 29607, 29608),
    ]  # fmt: skip
    assert spec.bootstrap == "127.0.0.1:29600,127.0.0.1:29603,127.0.0.1:29606"
    plain = kafka.ClusterSpec(name="p", brokers=3, port=29600, cluster_id="x", kafka_version="4")
    assert [(n.port, n.controller_port, n.mtls_port) for n in plain.nodes] == [
        (29600, 29601, None), (29602, 29603, None), (29604, 29605, None),
    ]  # fmt: skip
    with pytest.raises(kafka.LocalKafkaError, match=r"3 node\(s\) need ports 65530\.\.65538"):
        kafka.ClusterSpec(name="s", brokers=3, port=65530, cluster_id="x", kafka_version="4", secure=True)


def test_each_secured_node_has_its_own_certificate_and_every_broker_is_a_super_user(tmp_path: Path) -> None:
    spec = kafka.ClusterSpec(name="s", brokers=3, port=29600, cluster_id="x", kafka_version="4", secure=True)
    files = files_with_secrets(tmp_path)
    props = [kafka.server_properties(spec, n, tmp_path / f"node-{n.node_id}") for n in spec.nodes]
    assert [p["ssl.keystore.location"] for p in props] == [str(files.dir / f"broker-{i}.p12") for i in (1, 2, 3)]
    assert props[1]["listeners"] == ("SASL_SSL://127.0.0.1:29603,CONTROLLER://127.0.0.1:29604,MTLS://127.0.0.1:29605")
    assert props[1]["controller.quorum.voters"] == "1@127.0.0.1:29601,2@127.0.0.1:29604,3@127.0.0.1:29607"
    assert props[1]["inter.broker.listener.name"] == "MTLS"
    assert props[1]["listener.name.mtls.ssl.client.auth"] == "required"
    assert props[1]["listener.name.controller.ssl.client.auth"] == "required"
    assert props[1]["min.insync.replicas"] == "2"
    assert props[0]["super.users"] == (f"User:{ADMIN_USER};User:{BROKER_CN}-1;User:{BROKER_CN}-2;User:{BROKER_CN}-3")
    assert [broker_cn(i, 3) for i in (1, 2, 3)] == [f"{BROKER_CN}-{i}" for i in (1, 2, 3)]
    assert broker_cn(1, 1) == BROKER_CN and files.node_keystore(1, 1) == files.broker_keystore


@pytest.mark.parametrize("cn", [BROKER_CN, f"{BROKER_CN}-2"])
def test_a_client_certificate_may_not_take_a_brokers_name(tmp_path: Path, cn: str) -> None:
    with pytest.raises(kafka.LocalKafkaError, match="a broker's own principal"):
        issue_client_certificate(files_with_secrets(tmp_path), cn, "/nonexistent/java")


def test_a_reissued_certificate_must_name_a_node_of_the_cluster(tmp_path: Path) -> None:
    files = files_with_secrets(tmp_path)
    with pytest.raises(kafka.LocalKafkaError, match=r"no node 4: the cluster's nodes are 1\.\.3"):
        reissue_broker_certificate(files, 4, 3, "/nonexistent/java", tmp_path / "x.p12")


def test_secure_server_properties_authorize_and_authenticate_every_listener(tmp_path: Path) -> None:
    spec = kafka.ClusterSpec(name="s", brokers=1, port=29000, cluster_id="x", kafka_version="4", secure=True)
    files_with_secrets(tmp_path)
    props = kafka.server_properties(spec, spec.nodes[0], tmp_path / "node-1")
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL,MTLS:SSL"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:29000,MTLS://127.0.0.1:29002"
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:{ADMIN_USER};User:{BROKER_CN}"
    assert "PLAINTEXT" not in props["listeners"]


def test_client_configs_and_the_format_credential(tmp_path: Path) -> None:
    files = files_with_secrets(tmp_path)
    assert admin_config(files) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin",
        "sasl.password": "ap", "ssl.ca.location": str(files.ca_pem),
    }  # fmt: skip
    assert mtls_config(files, "carol")["ssl.keystore.location"] == str(files.dir / "clients" / "carol.p12")
    assert scram_format_args(files) == ["--add-scram", "SCRAM-SHA-512=[name=admin,password=ap]"]


def test_a_plain_spec_read_from_before_secure_existed_is_not_secure(tmp_path: Path) -> None:
    spec = kafka.ClusterSpec(name="p", brokers=1, port=29000, cluster_id="x", kafka_version="4")
    assert not spec.secure and spec.nodes[0].mtls_port is None
    assert "authorizer.class.name" not in kafka.server_properties(spec, spec.nodes[0], tmp_path / "node-1")
