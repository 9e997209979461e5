"""The three-broker Apache Kafka cluster: its shape, the topics the services create on it, and
no loss or duplicate when the busiest broker is killed while an idempotent producer sends, and
the services talking to a listener that requires SASL_SSL (with certificates made here).

Runs only against that cluster: `HOTLINE_TEST_BROKER=kafka` selects it for the session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from hotline.embedded.kafka_cluster import (
    BROKER_PROPERTIES,
    RunningKafkaCluster,
    SaslSslListener,
    read_properties,
    start_kafka_cluster,
)
from hotline.embedded.process import free_port
from shared.kafka import ensure_topics, make_producer
from shared.settings import Settings
from tests.conftest import Infra
from tests.e2e.test_intake import ticket
from tests.support import eventually, read_topic, running_service, settings_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("HOTLINE_TEST_BROKER", "").lower() != "kafka",
        reason="needs the 3-broker Apache Kafka cluster: run with "
        "HOTLINE_TEST_BROKER=kafka .venv/bin/pytest tests/integration/test_kafka_cluster.py",
    ),
]


async def _describe(bootstrap_servers: str, topic: str) -> list[dict[str, Any]]:
    """The partitions of `topic` (leader, replicas, isr), by partition number, once every
    broker knows the topic (a created topic reaches the brokers' metadata a little later)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()

    async def described() -> dict[str, Any] | None:
        (answer,) = await admin.describe_topics([topic])
        ready = answer["error_code"] == 0 and all(p["leader"] >= 0 for p in answer["partitions"])
        return answer if ready else None

    try:
        answer = await eventually(described, message=f"metadata of {topic}")
    finally:
        await admin.close()
    return sorted(answer["partitions"], key=lambda p: p["partition"])


async def _topic_config(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """The effective configuration of `topic` (topic overrides and broker defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    config: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _message, _type, name, entries = resource[:5]
            assert error_code == 0, resource
            assert name == topic, resource
            config.update({entry[0]: entry[1] for entry in entries})
    return config


async def test_the_cluster_has_three_brokers(infra: Infra) -> None:
    assert infra.kafka is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap_servers)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    brokers = {(b["node_id"], b["port"]) for b in cluster["brokers"]}
    assert brokers == {(n.node_id, n.port) for n in infra.kafka.nodes}
    assert len(brokers) == 3


async def test_the_services_topics_are_replicated_three_times_with_two_in_sync(
    infra: Infra,
) -> None:
    settings = settings_for(infra, infra.database_url)
    assert settings.topic_replication_factor == 3
    assert settings.kafka_idempotent_producer
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])

    partitions = await _describe(infra.bootstrap_servers, topic)
    assert len(partitions) == settings.topic_partitions
    for partition in partitions:
        assert len(partition["replicas"]) == 3
        assert set(partition["isr"]) == set(partition["replicas"])
    config = await _topic_config(infra.bootstrap_servers, topic)
    assert config["min.insync.replicas"] == "2"
    assert config["retention.ms"] == str(settings.topic_retention_ms)
    assert config["unclean.leader.election.enable"] == "false"


async def _send_until(
    producer: AIOKafkaProducer,
    topic: str,
    sent: dict[str, asyncio.Future[Any]],
    stop: asyncio.Event,
) -> None:
    """Send records with unique keys, 20 every 50 ms, until `stop` is set."""
    n = 0
    while not stop.is_set():
        for _ in range(20):
            key = f"k{n:06d}"
            sent[key] = await producer.send(topic, key=key.encode(), value=b"x" * 100)
            n += 1
        await asyncio.sleep(0.05)


async def test_killing_the_busiest_broker_while_sending_loses_and_doubles_nothing(
    infra: Infra,
) -> None:
    cluster = infra.kafka
    assert cluster is not None
    settings = settings_for(infra, infra.database_url, topic_partitions=6)
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])
    leaders = Counter(p["leader"] for p in await _describe(infra.bootstrap_servers, topic))
    victim = leaders.most_common(1)[0][0]
    index = next(i for i, n in enumerate(cluster.nodes) if n.node_id == victim)

    producer = make_producer(settings, client_id="kill-test")  # acks=all, idempotent
    await producer.start()
    sent: dict[str, asyncio.Future[Any]] = {}
    stop = asyncio.Event()
    try:
        sending = asyncio.create_task(_send_until(producer, topic, sent, stop))
        await asyncio.sleep(2)
        before = len(sent)
        cluster.kill_node(index)  # SIGKILL: no controlled shutdown
        await asyncio.sleep(10)  # sends go on while it is fenced and its partitions move
        during = len(sent) - before
        # Blocks the loop while the JVM starts: the node must be started from this (the
        # main) thread, whose exit its parent-death signal follows.
        cluster.start_node(index)
        await asyncio.sleep(2)
        stop.set()
        await sending
        results = await asyncio.gather(*sent.values(), return_exceptions=True)
    finally:
        await producer.stop()

    acked = {
        key
        for key, result in zip(sent, results, strict=True)
        if not isinstance(result, BaseException)
    }
    failed = [result for result in results if isinstance(result, BaseException)]
    assert during > 0, "nothing was sent while the broker was down"
    assert len(acked) >= len(sent) * 0.9, f"{len(failed)} sends failed, e.g. {failed[:3]}"

    records = await read_topic(infra.bootstrap_servers, topic, at_least=len(acked), timeout=60)
    counts = Counter(record.key.decode() for record in records if record.key is not None)
    lost = acked - counts.keys()
    doubled = {key: count for key, count in counts.items() if count > 1}
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:5]}"
    assert not doubled, f"{len(doubled)} records written twice, e.g. {list(doubled.items())[:5]}"
    assert counts.keys() <= sent.keys()

    # The cluster is whole again for the tests after this one.
    partitions = await _describe(infra.bootstrap_servers, topic)
    assert all(len(p["replicas"]) == 3 for p in partitions)


# ----------------------------------------------------------------------------- SASL_SSL

SASL_USER = "hotline"


@dataclass(frozen=True)
class Certificates:
    """PEM text of a test CA and of a server certificate for 127.0.0.1 it signed."""

    ca_file: Path
    ca_pem: str
    server_chain_pem: str
    server_key_pem: str


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Certificates:
    """A CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) signed by it, with
    `openssl`; the server key is unencrypted PKCS#8, as Kafka's PEM key store reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=hotline test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "2", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=folder,
    )  # fmt: skip
    ca_pem = (folder / "ca.pem").read_text()
    return Certificates(
        ca_file=folder / "ca.pem",
        ca_pem=ca_pem,
        server_chain_pem=(folder / "server.pem").read_text() + ca_pem,
        server_key_pem=(folder / "server.key").read_text(),
    )


@dataclass(frozen=True)
class OneNode:
    """A one-node cluster of this module's own, with a PLAINTEXT listener and one that
    requires SASL_SSL."""

    cluster: RunningKafkaCluster
    listener: SaslSslListener
    certificates: Certificates
    password: str


ONE_NODE = {
    # Retention enforced within a second (Kafka checks every 5 minutes by default), so that
    # the retention test sees it.
    "log.retention.check.interval.ms": "1000",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}
"""The project's broker settings scaled down to a single node, with a fast retention check."""


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneNode]:
    """One node (a second three-node cluster beside the session's would crowd two cores)
    whose extra listener requires SASL_SSL, with a CA and certificate made for it, and whose
    retention is enforced every second."""
    folder = tmp_path_factory.mktemp("kafka-sasl-ssl")
    certificates = make_certificates(folder / "tls")
    password = secrets.token_urlsafe(16)
    listener = SaslSslListener(
        ports=(free_port(),),
        ca_pem=certificates.ca_pem,
        certificate_chain_pem=certificates.server_chain_pem,
        private_key_pem=certificates.server_key_pem,
        users={SASL_USER: password},
    )
    settings_path = folder / "broker.properties"
    properties = {**read_properties(BROKER_PROPERTIES), **ONE_NODE}
    settings_path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    cluster = start_kafka_cluster(
        folder / "kafka", brokers=1, settings_path=settings_path, sasl_ssl=listener
    )
    try:
        yield OneNode(cluster, listener, certificates, password)
    finally:
        cluster.stop()


def _secure_settings(
    infra: Infra, database: str, secure: OneNode, mechanism: str, password: str
) -> Settings:
    return settings_for(
        infra,
        database,
        kafka_bootstrap_servers=secure.listener.bootstrap_servers,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=SASL_USER,
        kafka_sasl_password=password,
        kafka_ssl_cafile=secure.certificates.ca_file,
        topic_replication_factor=len(secure.cluster.nodes),
        kafka_idempotent_producer=True,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_the_services_work_through_a_listener_that_requires_sasl_ssl(
    infra: Infra, database: str, one_node: OneNode, mechanism: str
) -> None:
    settings = _secure_settings(infra, database, one_node, mechanism, one_node.password)
    async with AsyncExitStack() as stack:
        # One after the other: their migrations share Alembic's global state.
        intake = await stack.enter_async_context(
            running_service("intake", settings, wait_for_broker=False)
        )
        dispatch = await stack.enter_async_context(
            running_service("dispatch", settings, wait_for_broker=False)
        )
        for service in (intake, dispatch):
            await eventually(
                service.runtime.broker_connected.is_set, timeout=60, message=f"{service.name} up"
            )
        response = await intake.http.post("/tickets", json=ticket())
        assert response.status_code == 201, response.text
        ticket_id = response.json()["ticket_id"]

        async def dispatch_knows_it() -> bool:
            return (await dispatch.http.get(f"/tickets/{ticket_id}")).status_code == 200

        # Dispatch's consumer read the ticket from the intake topic over SASL_SSL.
        await eventually(dispatch_knows_it, timeout=60, message="dispatch knows the ticket")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_password_is_refused(
    infra: Infra,
    database: str,
    one_node: OneNode,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _secure_settings(infra, database, one_node, mechanism, "not-the-password")
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        async with asyncio.timeout(60):
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                await ensure_topics(settings, [settings.topic("intake")])
    # The TLS handshake succeeded; the broker refused the credentials.
    refusals = [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")]
    assert any("authentication failed" in m.lower() for m in refusals), refusals


# ----------------------------------------------------------------------------- retention


async def test_a_topic_keeps_its_records_only_as_long_as_its_retention(
    infra: Infra, one_node: OneNode
) -> None:
    """Apache Kafka deletes records older than the topic's `retention.ms` (the services set
    it from HOTLINE_TOPIC_RETENTION_MS); tansu's memory storage keeps them until it stops.
    An event deleted before its consumers read it is lost to them: the retention must
    outlast any outage of a consumer (README "What each broker guarantees")."""
    settings = settings_for(
        infra,
        infra.database_url,
        kafka_bootstrap_servers=one_node.cluster.bootstrap_servers,
        topic_replication_factor=1,
        topic_retention_ms=3000,
        topic_partitions=1,
    )
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])
    config = await _topic_config(settings.kafka_bootstrap_servers, topic)
    assert config["retention.ms"] == "3000"

    producer = make_producer(settings, client_id="retention-test")
    await producer.start()
    try:
        for n in range(20):
            await (await producer.send(topic, key=f"old{n}".encode(), value=b"x"))
    finally:
        await producer.stop()
    partition = TopicPartition(topic, 0)
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await probe.start()
    try:
        assert (await probe.beginning_offsets([partition]))[partition] == 0
        assert (await probe.end_offsets([partition]))[partition] == 20

        async def deleted() -> bool:
            return (await probe.beginning_offsets([partition]))[partition] == 20

        # The broker rolls the expired active segment and deletes it: a few seconds.
        await eventually(deleted, timeout=60, message="records older than the retention gone")
        assert (await probe.end_offsets([partition]))[partition] == 20  # offsets go on
    finally:
        await probe.stop()
    assert await read_topic(settings.kafka_bootstrap_servers, topic, timeout=2) == []
