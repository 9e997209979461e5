"""The Apache Kafka cluster's settings, without starting a JVM."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from hotline.embedded.kafka_cluster import (
    BROKER_PROPERTIES,
    KafkaNode,
    RunningKafkaCluster,
    SaslSslListener,
    _node_properties,
    _property_line,
    compose_environment,
    new_cluster_id,
    read_properties,
)


def test_the_project_settings_are_the_ones_the_services_rely_on() -> None:
    settings = read_properties(BROKER_PROPERTIES)
    assert settings["default.replication.factor"] == "3"
    assert settings["min.insync.replicas"] == "2"
    assert settings["offsets.topic.replication.factor"] == "3"
    assert settings["transaction.state.log.replication.factor"] == "3"
    assert settings["transaction.state.log.min.isr"] == "2"
    assert settings["auto.create.topics.enable"] == "false"
    assert settings["group.initial.rebalance.delay.ms"] == "0"


def test_compose_takes_the_same_settings_as_kafka_environment_variables() -> None:
    env = compose_environment({"min.insync.replicas": "2", "log.retention.ms": "5"})
    assert env == {"KAFKA_MIN_INSYNC_REPLICAS": "2", "KAFKA_LOG_RETENTION_MS": "5"}


def test_properties_skip_comments_and_reject_lines_without_a_value(tmp_path: Path) -> None:
    path = tmp_path / "p.properties"
    path.write_text("# c\n! c\n\n a.b = 1 \nc=x=y\n")
    assert read_properties(path) == {"a.b": "1", "c": "x=y"}
    path.write_text("nonsense\n")
    with pytest.raises(ValueError, match="key=value"):
        read_properties(path)


def test_a_cluster_id_is_sixteen_bytes_in_url_safe_base64() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_each_node_is_a_combined_node_of_one_static_quorum(tmp_path: Path) -> None:
    cluster = RunningKafkaCluster(tmp_path, "id", tmp_path, "java")
    cluster.nodes = [
        KafkaNode(i, 9000 + i, 9100 + i, tmp_path / f"node-{i}" / "server.properties", tmp_path)
        for i in range(3)
    ]
    # A project setting may not override a node's identity.
    props = _node_properties(cluster, cluster.nodes[1], {"node.id": "7", "a": "b"})
    assert props["node.id"] == "1"
    assert props["a"] == "b"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == (
        "0@127.0.0.1:9100,1@127.0.0.1:9101,2@127.0.0.1:9102"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001"
    assert props["log.dirs"] == str(tmp_path / "node-1" / "data")


def _listener(**overrides: object) -> SaslSslListener:
    values: dict[str, object] = {
        "ports": (9200, 9201),
        "ca_pem": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
        "certificate_chain_pem": "-----BEGIN CERTIFICATE-----\nS\n-----END CERTIFICATE-----\n",
        "private_key_pem": "-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n",
        "users": {"hotline": "pw"},
    }
    values.update(overrides)
    return SaslSslListener(**values)  # type: ignore[arg-type]


def test_without_a_secure_listener_a_node_has_only_plaintext(tmp_path: Path) -> None:
    cluster = RunningKafkaCluster(tmp_path, "id", tmp_path, "java")
    cluster.nodes = [KafkaNode(0, 9000, 9100, tmp_path / "server.properties", tmp_path)]
    props = _node_properties(cluster, cluster.nodes[0], {})
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any("sasl" in key or "ssl" in key for key in props)


def test_a_secure_listener_requires_sasl_ssl_beside_plaintext(tmp_path: Path) -> None:
    listener = _listener()
    cluster = RunningKafkaCluster(tmp_path, "id", tmp_path, "java", sasl_ssl=listener)
    cluster.nodes = [
        KafkaNode(i, 9000 + i, 9100 + i, tmp_path / f"n{i}", tmp_path, secure_port=9200 + i)
        for i in range(2)
    ]
    props = _node_properties(cluster, cluster.nodes[1], {})
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101,SECURE://127.0.0.1:9201"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001,SECURE://127.0.0.1:9201"
    assert props["listener.security.protocol.map"].endswith(",SECURE:SASL_SSL")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-512"
    assert props["listener.name.secure.ssl.keystore.type"] == "PEM"
    assert props["listener.name.secure.ssl.truststore.type"] == "PEM"
    assert props["listener.name.secure.ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY")
    assert props["listener.name.secure.plain.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required user_hotline="pw";'
    )
    assert props["listener.name.secure.scram-sha-512.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    )
    assert listener.bootstrap_servers == "127.0.0.1:9200,127.0.0.1:9201"
    assert listener.scram_arguments() == ["--add-scram=SCRAM-SHA-512=[name=hotline,password=pw]"]


def test_a_secure_listener_refuses_unknown_mechanisms_and_unsafe_credentials() -> None:
    with pytest.raises(ValueError, match="mechanisms"):
        _listener(mechanisms=("GSSAPI",))
    with pytest.raises(ValueError, match="user"):
        _listener(users={})
    with pytest.raises(ValueError, match="quotes"):
        _listener(users={"hotline": 'a"b'})


def test_multi_line_values_are_written_as_java_properties_escapes() -> None:
    assert _property_line("k", "a\nb\\c") == "k=a\\nb\\\\c"
    assert _property_line("log.dirs", "/tmp/x") == "log.dirs=/tmp/x"


def test_a_cluster_id_never_starts_with_a_dash_so_kafka_storage_takes_it_as_a_value(
    monkeypatch,
):
    import uuid as uuid_module

    from hotline.embedded import kafka_cluster

    # b"\xf8..." encodes to "-..." in URL-safe base64: the first draw must be skipped.
    draws = iter([uuid_module.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid_module.uuid4()])
    monkeypatch.setattr(kafka_cluster.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka_cluster.new_cluster_id()
    assert not next(draws, None)  # both draws were taken: the dashed one was skipped
    monkeypatch.undo()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
    assert all(not kafka_cluster.new_cluster_id().startswith("-") for _ in range(2000))
