"""Certificates, credentials and settings of a secured local cluster (``grctl dev kafka start --secure``).

Each node of a secured cluster has three listeners on 127.0.0.1 (node ``i`` of N starts at
``port + 3*(i-1)``; one node: ``port``, ``port + 1``, ``port + 2``):

- ``port``: SASL_SSL with SCRAM-SHA-512, the clients' listener (the bootstrap address);
- ``port + 1``: the KRaft controller, SSL with client certificates required (the quorum's
  voters talk to each other, and each broker to the active controller, with mutual TLS);
- ``port + 2``: SSL with client certificates required (mTLS), also the inter-broker listener
  (replication between brokers is mutual TLS).

Every certificate is signed by a CA that the cluster makes for itself once, with the JDK's
``keytool`` (the broker already needs the JDK, so nothing else is required): PKCS#12 stores for
the brokers and for client certificates, and the CA certificate as PEM for librdkafka's
``ssl.ca.location``. Each node has a certificate of its own (SAN ``127.0.0.1`` and ``localhost``):
one node ``broker.p12`` with CN ``grctl-dev-broker``; node ``i`` of several ``broker-<i>.p12`` with
CN ``grctl-dev-broker-<i>``. A certificate's principal is its CN (``ssl.principal.mapping.rules``),
a SCRAM user's principal is its name. The StandardAuthorizer denies whatever no ACL allows; the
super users are the ``admin`` SCRAM user (created at storage format, ``--add-scram``, on every
node) and the brokers' own certificates. `reissue_broker_certificate` gives a node a new key and
certificate from the same CA (a certificate rotation; the node loads it when it starts again, or
at once through a dynamic ``listener.name.<listener>.ssl.keystore.location`` update). The files
live in ``<cluster>/secure/``; ``admin.properties`` there is a client config for
``grctl --kafka-config`` (and ``kafka-*.sh --command-config`` uses the same keys).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from grctl.dev._errors import LocalKafkaError

#: The SCRAM super user made at format time.
ADMIN_USER = "admin"
#: The broker's certificate CN, which is also its principal (a super user); node ``i`` of a
#: cluster of several nodes: ``grctl-dev-broker-<i>`` (`broker_cn`).
BROKER_CN = "grctl-dev-broker"
_BROKER_CN_RE = re.compile(rf"^{BROKER_CN}(-[0-9]+)?$")
#: Where a broker certificate is valid: every local node listens on loopback.
BROKER_SAN = "ip:127.0.0.1,dns:localhost"
SCRAM_MECHANISM = "SCRAM-SHA-512"
CERT_VALIDITY_DAYS = 3650
_CN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_KEYTOOL_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class SecureFiles:
    """The TLS material and credentials of one secured local cluster.

    Attributes:
        dir: ``<cluster folder>/secure``.
    """

    dir: Path

    @property
    def ca_store(self) -> Path:
        """The CA's key pair (PKCS#12): only `issue_client_certificate` reads it."""
        return self.dir / "ca.p12"

    @property
    def ca_pem(self) -> Path:
        """The CA certificate, PEM: a client's ``ssl.ca.location``."""
        return self.dir / "ca.pem"

    @property
    def truststore(self) -> Path:
        """The CA certificate as a PKCS#12 truststore (the broker's)."""
        return self.dir / "truststore.p12"

    @property
    def broker_keystore(self) -> Path:
        """The keystore of a one-node cluster's broker."""
        return self.dir / "broker.p12"

    def node_keystore(self, node_id: int, brokers: int) -> Path:
        """The keystore of node `node_id` of a cluster of `brokers` nodes."""
        return self.broker_keystore if brokers == 1 else self.dir / f"broker-{node_id}.p12"

    @property
    def secrets_file(self) -> Path:
        """The store password and the admin password (mode 0600)."""
        return self.dir / "secrets.json"

    @property
    def admin_properties(self) -> Path:
        """librdkafka settings of the admin user: ``grctl --kafka-config <this>``."""
        return self.dir / "admin.properties"

    def client_keystore(self, cn: str) -> Path:
        return self.dir / "clients" / f"{cn}.p12"

    def _secrets(self) -> dict[str, str]:
        try:
            data = json.loads(self.secrets_file.read_text())
            return {"store_password": str(data["store_password"]), "admin_password": str(data["admin_password"])}
        except (OSError, ValueError, KeyError) as exc:
            raise LocalKafkaError(
                f"cannot read {self.secrets_file} ({exc}); wipe the cluster and start it again with --secure"
            ) from exc

    @property
    def store_password(self) -> str:
        """The password of every PKCS#12 store of this cluster."""
        return self._secrets()["store_password"]

    @property
    def admin_password(self) -> str:
        return self._secrets()["admin_password"]


def broker_cn(node_id: int, brokers: int) -> str:
    """The certificate CN (and principal) of node `node_id` of a cluster of `brokers` nodes."""
    return BROKER_CN if brokers == 1 else f"{BROKER_CN}-{node_id}"


def broker_properties(
    files: SecureFiles, port: int, controller_port: int, mtls_port: int, *, node_id: int = 1, brokers: int = 1
) -> dict[str, str]:
    """The listener, TLS, SASL and authorizer settings of one secured node."""
    password = files.store_password
    brokers_principals = ";".join(f"User:{broker_cn(i, brokers)}" for i in range(1, brokers + 1))
    return {
        "listeners": (
            f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},MTLS://127.0.0.1:{mtls_port}"
        ),
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},MTLS://127.0.0.1:{mtls_port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL,MTLS:SSL",
        "inter.broker.listener.name": "MTLS",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(files.node_keystore(node_id, brokers)),
        "ssl.keystore.password": password,
        "ssl.key.password": password,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(files.truststore),
        "ssl.truststore.password": password,
        # A certificate's principal is its CN: CN=alice authenticates as User:alice.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_USER};{brokers_principals}",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_format_args(files: SecureFiles) -> list[str]:
    """The StorageTool arguments that create the admin's SCRAM credential at format time."""
    return ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={files.admin_password}]"]


def sasl_config(files: SecureFiles, user: str, password: str) -> dict[str, str]:
    """librdkafka settings of a SCRAM user on the SASL_SSL listener."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(files.ca_pem),
    }


def admin_config(files: SecureFiles) -> dict[str, str]:
    """librdkafka settings of the admin super user."""
    return sasl_config(files, ADMIN_USER, files.admin_password)


def mtls_config(files: SecureFiles, cn: str) -> dict[str, str]:
    """librdkafka settings of the client certificate `cn` on the mTLS listener."""
    return {
        "security.protocol": "SSL",
        "ssl.ca.location": str(files.ca_pem),
        "ssl.keystore.location": str(files.client_keystore(cn)),
        "ssl.keystore.password": files.store_password,
    }


def _keytool(java_path: str) -> str:
    sibling = Path(java_path).parent / "keytool"
    found = str(sibling) if os.access(sibling, os.X_OK) else shutil.which("keytool")
    if found is None:
        raise LocalKafkaError(f"no `keytool` beside {java_path} nor on PATH: install a full JDK 17+ (it has keytool)")
    return found


def _run(keytool: str, *args: str) -> None:
    cmd = [keytool, *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=_KEYTOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"keytool {args[0]} failed: {exc}") from exc
    if out.returncode != 0:
        raise LocalKafkaError(f"keytool {args[0]} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}")


def _signed_keypair(keytool: str, files: SecureFiles, store: Path, cn: str, san: str | None) -> None:
    """A key pair for `cn` in `store`, its certificate signed by the cluster's CA."""
    pw = files.store_password
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_suffix(".p12.tmp")
    tmp.unlink(missing_ok=True)
    common = ["-storetype", "PKCS12", "-storepass", pw]
    _run(keytool, "-genkeypair", "-alias", cn, "-dname", f"CN={cn}", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", str(CERT_VALIDITY_DAYS), "-keystore", str(tmp), *common)  # fmt: skip
    csr, crt = store.with_suffix(".csr"), store.with_suffix(".crt")
    _run(keytool, "-certreq", "-alias", cn, "-keystore", str(tmp), "-file", str(csr), *common)
    ext = ["-ext", f"SAN={san}"] if san else []
    _run(keytool, "-gencert", "-alias", "ca", "-keystore", str(files.ca_store), "-infile", str(csr),
         "-outfile", str(crt), "-rfc", "-validity", str(CERT_VALIDITY_DAYS), *ext, *common)  # fmt: skip
    _run(
        keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem), "-keystore", str(tmp), *common
    )
    _run(keytool, "-importcert", "-noprompt", "-alias", cn, "-file", str(crt), "-keystore", str(tmp), *common)
    csr.unlink(missing_ok=True)
    crt.unlink(missing_ok=True)
    os.chmod(tmp, 0o600)
    tmp.replace(store)


def ensure_material(cluster_dir: Path, java_path: str, brokers: int = 1) -> SecureFiles:
    """Make the cluster's CA, broker keystores, truststore and passwords if they do not exist yet."""
    files = SecureFiles(cluster_dir / "secure")
    files.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(files.dir, 0o700)
    if not files.secrets_file.exists():
        tmp = files.secrets_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"store_password": secrets.token_urlsafe(18), "admin_password": secrets.token_urlsafe(18)})
        )
        os.chmod(tmp, 0o600)
        tmp.replace(files.secrets_file)
    stores = [files.node_keystore(i, brokers) for i in range(1, brokers + 1)]
    if all(store.exists() for store in stores) and files.truststore.exists() and files.ca_pem.exists():
        _write_admin_properties(files)
        return files
    keytool = _keytool(java_path)
    pw = files.store_password
    common = ["-storetype", "PKCS12", "-storepass", pw]
    for stale in (files.ca_store, files.ca_pem, files.truststore, *stores):
        stale.unlink(missing_ok=True)
    _run(keytool, "-genkeypair", "-alias", "ca", "-dname", "CN=grctl-dev-ca", "-ext", "bc:c", "-keyalg", "RSA",
         "-keysize", "2048", "-validity", str(CERT_VALIDITY_DAYS),
         "-keystore", str(files.ca_store), *common)  # fmt: skip
    _run(
        keytool,
        "-exportcert",
        "-rfc",
        "-alias",
        "ca",
        "-keystore",
        str(files.ca_store),
        "-file",
        str(files.ca_pem),
        *common,
    )
    _run(keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem),
         "-keystore", str(files.truststore), *common)  # fmt: skip
    for node_id, store in enumerate(stores, start=1):
        _signed_keypair(keytool, files, store, broker_cn(node_id, brokers), BROKER_SAN)
    _write_admin_properties(files)
    return files


def reissue_broker_certificate(files: SecureFiles, node_id: int, brokers: int, java_path: str, store: Path) -> Path:
    """A new key pair and certificate for node `node_id`, signed by the cluster's CA, written to `store`.

    Same CN and SAN as the node's first certificate (Kafka refuses a dynamically reloaded
    keystore whose subject or SANs differ), a new key and serial number. `store` may be the
    node's keystore itself (replaced atomically; the node reads it when it starts again) or a
    new file for a dynamic ``listener.name.<listener>.ssl.keystore.location`` update.

    Returns:
        `store`.

    Raises:
        LocalKafkaError: keytool failed, or the cluster has no node `node_id`.
    """
    if not 1 <= node_id <= brokers:
        raise LocalKafkaError(f"no node {node_id}: the cluster's nodes are 1..{brokers}")
    _signed_keypair(_keytool(java_path), files, store, broker_cn(node_id, brokers), BROKER_SAN)
    return store


def issue_client_certificate(files: SecureFiles, cn: str, java_path: str) -> dict[str, str]:
    """A client certificate for principal ``User:<cn>``, signed by the cluster's CA (made once).

    Returns:
        The librdkafka settings that authenticate with it on the mTLS listener.
    """
    if not _CN_RE.match(cn):
        raise LocalKafkaError(f"invalid certificate name {cn!r}: use letters, digits, '.', '_' or '-' (max 63)")
    if _BROKER_CN_RE.match(cn):
        raise LocalKafkaError(f"{cn!r} is a broker's own principal (a super user): pick another name")
    store = files.client_keystore(cn)
    if not store.exists():
        _signed_keypair(_keytool(java_path), files, store, cn, None)
    return mtls_config(files, cn)


def _write_admin_properties(files: SecureFiles) -> None:
    lines = [
        "# The admin super user of this local secured cluster: grctl --kafka-config <this file>",
        *(f"{k}={v}" for k, v in admin_config(files).items()),
    ]
    tmp = files.admin_properties.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(files.admin_properties)
