"""The Apache Kafka cluster's settings, without starting a JVM."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from hotline.embedded.kafka_cluster import (
    BROKER_PROPERTIES,
    KafkaNode,
    RunningKafkaCluster,
    _node_properties,
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
