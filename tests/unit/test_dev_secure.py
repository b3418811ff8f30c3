"""The settings of a secured local cluster (no JVM: what `grctl dev kafka start --secure` writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grctl.dev import kafka
from grctl.dev.secure import ADMIN_USER, BROKER_CN, SecureFiles, admin_config, mtls_config, scram_format_args


def files_with_secrets(tmp_path: Path) -> SecureFiles:
    files = SecureFiles(tmp_path / "secure")
    files.dir.mkdir()
    files.secrets_file.write_text(json.dumps({"store_password": "sp", "admin_password": "ap"}))
    return files


def test_a_secure_spec_has_one_node_with_an_mtls_port(tmp_path: Path) -> None:
    spec = kafka.ClusterSpec(name="s", brokers=1, port=29000, cluster_id="x", kafka_version="4", secure=True)
    (node,) = spec.nodes
    assert (node.port, node.controller_port, node.mtls_port) == (29000, 29001, 29002)
    with pytest.raises(kafka.LocalKafkaError, match="one node, not 3"):
        kafka.ClusterSpec(name="s", brokers=3, port=29000, cluster_id="x", kafka_version="4", secure=True)
    with pytest.raises(kafka.LocalKafkaError, match="invalid port"):
        kafka.ClusterSpec(name="s", brokers=1, port=65534, cluster_id="x", kafka_version="4", secure=True)


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
