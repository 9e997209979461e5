"""A real Apache Kafka 4.x cluster of three KRaft nodes on loopback, as child JVMs.

The jars come from Maven Central through `kafka/pom.xml`, resolved once into a cache outside
the repo (`$HOTLINE_KAFKA_CACHE`, default `~/.cache/hotline/kafka-<version>`). Each node is a
combined broker and controller; the broker settings that matter (replication, min ISR,
retention...) come from `kafka/broker.properties`, the one place docker-compose reads too.

    python -m hotline.embedded.kafka_cluster --data-dir DIR

starts one, prints its bootstrap servers and waits for Ctrl-C. Linux only (prctl, /proc).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from hotline.embedded.broker import _recv_exactly
from hotline.embedded.process import (
    LOOPBACK,
    EmbeddedStartError,
    Launch,
    PortInUseError,
    exit_failure,
    free_port,
    not_ready_failure,
    spawn,
    start_server,
    terminate,
)

log = logging.getLogger(__package__)

KAFKA_VERSION = "4.4.0"
"""The newest Kafka that Maven Central serves here; its broker runs on Java 17."""
KAFKA_DIR = Path(__file__).resolve().parents[2] / "kafka"
POM = KAFKA_DIR / "pom.xml"
BROKER_PROPERTIES = KAFKA_DIR / "broker.properties"

JVM_OPTIONS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
"""A modest heap per node: three JVMs share a small machine."""

SMALL_MACHINE: Mapping[str, str] = {
    # Fewer threads and internal-topic partitions than Kafka's defaults: three nodes share
    # two cores here. broker.properties overrides any of these.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "num.replica.fetchers": "1",
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.num.partitions": "6",
    "share.coordinator.state.topic.num.partitions": "3",
    # A killed node is fenced, and its partitions led elsewhere, after 6 s instead of 9 s.
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1000",
}

_PORT_ATTEMPTS = 3
_STOP_TIMEOUT = 20.0
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


# ----------------------------------------------------------------------------- the jars


def kafka_cache(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of `version` are kept: $HOTLINE_KAFKA_CACHE or ~/.cache/hotline/..."""
    configured = os.environ.get("HOTLINE_KAFKA_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "hotline" / f"kafka-{version}"


def resolve_kafka(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """The folder of the broker's jars, resolved with Maven the first time (then reused)."""
    lib = (cache or kafka_cache(version)) / "lib"
    if (lib / f"kafka_2.13-{version}.jar").is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EmbeddedStartError(
            "Maven (`mvn`) is needed once to fetch the Apache Kafka jars; install it "
            f"(apt-get install maven) or put the jars of kafka_2.13 {version} in {lib}."
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    started = time.monotonic()
    log.info("resolving Apache Kafka %s into %s (once)", version, lib)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise EmbeddedStartError(
            f"Could not resolve Apache Kafka {version} with Maven ({' '.join(command)}):\n"
            + "\n".join(output)
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)  # atomic: a half-copied folder is never taken for a complete one
    log.info("resolved Apache Kafka %s in %.1fs", version, time.monotonic() - started)
    return lib


def storage_tool_class(lib: Path) -> str:
    """The storage tool's main class: Scala `kafka.tools.StorageTool` up to now, Java
    `org.apache.kafka.tools.StorageTool` should a later release move it."""
    for name in ("org/apache/kafka/tools/StorageTool.class", "kafka/tools/StorageTool.class"):
        for jar in sorted(lib.glob("kafka*.jar")):
            with zipfile.ZipFile(jar) as archive:
                if name in archive.namelist():
                    return name.removesuffix(".class").replace("/", ".")
    raise EmbeddedStartError(f"No Kafka StorageTool class in the jars under {lib}")


def read_properties(path: Path = BROKER_PROPERTIES) -> dict[str, str]:
    """A Java properties file of plain `key=value` lines (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not a key=value line: {raw!r}")
        values[key.strip()] = value.strip()
    return values


def compose_environment(properties: Mapping[str, str]) -> dict[str, str]:
    """The same settings as the KAFKA_* environment variables of the apache/kafka image."""
    return {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in properties.items()}


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).

    Never one that starts with `-`: `kafka-storage format --cluster-id -x...` takes it for
    an option and fails (Kafka's own `Uuid.randomUuid` skips those for the same reason)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


# ----------------------------------------------------------------------------- readiness


def metadata_broker_ids(port: int, timeout: float = 1.0) -> set[int] | None:
    """The broker ids a Kafka Metadata v4 request to 127.0.0.1:`port` lists (None: no answer).

    Kafka 4 no longer answers Metadata v0-v3 (KIP-896), so this is not broker.py's v0 check.
    A raw request keeps the readiness check synchronous and independent of any event loop.
    """
    correlation_id = 0x4B43
    client_id = b"hotline-ready-check"
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    request = header + struct.pack(">ib", 0, 0)  # no topics, no auto-creation
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            reply = _recv_exactly(sock, size)
        got_id, _throttle, count = struct.unpack_from(">iii", reply, 0)
        if got_id != correlation_id:
            return None
        pos, ids = 12, set()
        for _ in range(count):
            (node_id, host_len) = struct.unpack_from(">ih", reply, pos)
            pos += 6 + host_len + 4  # node_id, host, port
            (rack_len,) = struct.unpack_from(">h", reply, pos)
            pos += 2 + max(rack_len, 0)
            ids.add(node_id)
    except (OSError, struct.error):
        return None
    return ids


# ----------------------------------------------------------------------------- the cluster


SECURE_LISTENER = "SECURE"
"""The name of the optional SASL_SSL listener (its settings are `listener.name.secure.*`)."""
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SaslSslListener:
    """An extra client listener that requires TLS and SASL, beside the PLAINTEXT one that the
    brokers (and the readiness check) keep using among themselves.

    `ports` holds one port per node. The certificates are PEM text: the CA that clients trust,
    the brokers' certificate chain (one certificate for all nodes: 127.0.0.1) and its
    unencrypted PKCS#8 private key. `users` maps SASL user names to passwords, known to every
    mechanism in `mechanisms` (PLAIN in the listener's JAAS config, SCRAM as credentials
    written into the cluster metadata when the storage is formatted).
    """

    ports: tuple[int, ...]
    ca_pem: str
    certificate_chain_pem: str
    private_key_pem: str
    users: Mapping[str, str]
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-512")

    def __post_init__(self) -> None:
        unknown = set(self.mechanisms) - {"PLAIN", *SCRAM_MECHANISMS}
        if unknown or not self.mechanisms:
            raise ValueError(f"SASL mechanisms: PLAIN, SCRAM-SHA-256/512, not {unknown or '()'}")
        if not self.users:
            raise ValueError("a SASL_SSL listener needs at least one user")
        for name, password in self.users.items():
            if not name or any(c in name + password for c in '"\\,=[]\n'):
                raise ValueError(f"SASL user {name!r}: no quotes, backslashes, , = [ ] or newlines")

    @property
    def bootstrap_servers(self) -> str:
        """All nodes' secure listeners, comma-separated, as Kafka clients take them."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.ports)

    def properties(self, port: int) -> dict[str, str]:
        """The listener's own settings (without the `listeners` entries) for a node on `port`."""
        prefix = f"listener.name.{SECURE_LISTENER.lower()}."
        values = {
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.certificate.chain": self.certificate_chain_pem.strip(),
            f"{prefix}ssl.keystore.key": self.private_key_pem.strip(),
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.certificates": self.ca_pem.strip(),
            f"{prefix}sasl.enabled.mechanisms": ",".join(self.mechanisms),
            "sasl.enabled.mechanisms": ",".join(self.mechanisms),
        }
        if "PLAIN" in self.mechanisms:
            users = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
            values[f"{prefix}plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        for mechanism in self.mechanisms:
            if mechanism in SCRAM_MECHANISMS:
                values[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        return values

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that store the SCRAM credentials of every user."""
        return [
            f"--add-scram={mechanism}=[name={name},password={password}]"
            for mechanism in self.mechanisms
            if mechanism in SCRAM_MECHANISMS
            for name, password in self.users.items()
        ]


@dataclass
class KafkaNode:
    """One combined broker+controller JVM; its ports stay the same across restarts."""

    node_id: int
    port: int
    controller_port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    secure_port: int | None = None
    """The node's SASL_SSL listener, when the cluster has one."""

    @property
    def pid(self) -> int | None:
        """The JVM's pid while it runs."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    @property
    def address(self) -> str:
        """Where clients reach this node's broker."""
        return f"{LOOPBACK}:{self.port}"


@dataclass
class RunningKafkaCluster:
    """Three (or `brokers`) Kafka nodes; a node can be killed and started again by index."""

    data_dir: Path
    cluster_id: str
    lib: Path
    java: str
    nodes: list[KafkaNode] = field(default_factory=list)
    sasl_ssl: SaslSslListener | None = None

    @property
    def bootstrap_servers(self) -> str:
        """All nodes, comma-separated, as Kafka clients take them."""
        return ",".join(node.address for node in self.nodes)

    @property
    def broker_ids(self) -> set[int]:
        """Every node id of the cluster."""
        return {node.node_id for node in self.nodes}

    def kill_node(self, index: int) -> None:
        """SIGKILL one node (a crash: no controlled shutdown) and reap it."""
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            log.info("kafka node %d (pid %d) killed", index, process.pid)

    def stop_node(self, index: int, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM one node (a controlled shutdown), SIGKILL after `timeout`."""
        process = self.nodes[index].process
        if process is not None:
            terminate(process, signal.SIGTERM, timeout, f"kafka node {index}")

    def start_node(self, index: int, *, ready_timeout: float = 90.0) -> None:
        """Start a stopped node again on its own ports; return once every node answers for it."""
        node = self._stopped(index)
        deadline = time.monotonic() + ready_timeout
        process, _ = start_server(partial(self._launch, node, self.broker_ids), node.port, deadline)
        node.process = process
        log.info("kafka node %d ready again on %s (pid %d)", index, node.address, process.pid)

    def launch_node(self, index: int) -> Callable[[], bool]:
        """Start a stopped node again without waiting for it (a JVM takes seconds to join,
        and an event loop must not block that long). Returns a check, blocking for up to a
        second, that is true once the node lists every broker; it raises EmbeddedStartError
        if the node exited. Call this from the thread that outlives the node (see
        `pdeathsig_preexec`); the check may run in any thread."""
        node = self._stopped(index)
        launch = self._launch(node, self.broker_ids, node.port)
        process, offset = spawn(launch)
        node.process = process

        def ready() -> bool:
            if process.poll() is not None:
                raise exit_failure(launch, process, offset, port_was_chosen=False)
            return launch.is_ready(process)

        return ready

    def _stopped(self, index: int) -> KafkaNode:
        node = self.nodes[index]
        if node.pid is not None:
            raise EmbeddedStartError(f"kafka node {index} is running (pid {node.pid})")
        return node

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM every node at once, SIGKILL those still running after `timeout`. Idempotent."""
        running = [n.process for n in self.nodes if n.process and n.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for index, node in enumerate(self.nodes):
            if node.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            terminate(node.process, signal.SIGKILL, 5.0, f"kafka node {index}")

    def _launch(self, node: KafkaNode, expected: set[int], port: int) -> Launch:
        """Run one node's JVM; ready when its broker lists all `expected` brokers."""
        command = [
            self.java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.log_path.parent}",
            "-cp",
            f"{self.lib}/*",
            "kafka.Kafka",
            str(node.config_path),
        ]
        return Launch(
            name=f"kafka node {node.node_id}",
            program="kafka",
            title=f"Kafka node {node.node_id}",
            cannot_run=f"Could not run {self.java}",
            port_was_taken=lambda tail: "Address already in use" in tail,
            stop_signal=signal.SIGTERM,
            stop_timeout=_STOP_TIMEOUT,
            command=command,
            popen_kwargs={"cwd": str(node.config_path.parent)},
            log_path=node.log_path,
            log_banner=f"kafka node {node.node_id} on {LOOPBACK}:{port}",
            is_ready=lambda _process: metadata_broker_ids(port) == expected,
        )


def _node_properties(
    cluster: RunningKafkaCluster, node: KafkaNode, settings: Mapping[str, str]
) -> dict[str, str]:
    """server.properties of one node: small-machine defaults, the project's settings, then
    this node's identity, listeners and the static controller quorum."""
    voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in cluster.nodes)
    properties = {
        **SMALL_MACHINE,
        **settings,
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{LOOPBACK}:{node.port},CONTROLLER://{LOOPBACK}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(node.config_path.parent / "data"),
    }
    if cluster.sasl_ssl is not None and node.secure_port is not None:
        secure = f"{SECURE_LISTENER}://{LOOPBACK}:{node.secure_port}"
        properties.update(cluster.sasl_ssl.properties(node.secure_port))
        properties["listeners"] += f",{secure}"
        properties["advertised.listeners"] += f",{secure}"
        properties["listener.security.protocol.map"] += f",{SECURE_LISTENER}:SASL_SSL"
    return properties


def _property_line(key: str, value: str) -> str:
    """`key=value` as java.util.Properties reads it back (PEM text spans lines)."""
    escaped = value.replace("\\", "\\\\").replace("\r", "").replace("\n", "\\n")
    return f"{key}={escaped}"


def _write_configs(cluster: RunningKafkaCluster, settings: Mapping[str, str]) -> None:
    (cluster.data_dir / "log4j2.properties").write_text(_LOG4J2)
    for node in cluster.nodes:
        node.config_path.parent.mkdir(parents=True, exist_ok=True)
        properties = _node_properties(cluster, node, settings)
        lines = [_property_line(k, v) for k, v in properties.items()]
        node.config_path.write_text("\n".join(lines) + "\n")


def _format_storage(cluster: RunningKafkaCluster) -> None:
    """Format every node's log dir with the cluster id (nodes already formatted are kept)."""
    tool = storage_tool_class(cluster.lib)
    log4j = f"-Dlog4j2.configurationFile={cluster.data_dir / 'log4j2.properties'}"
    runs = []
    for node in cluster.nodes:
        command = [
            cluster.java,
            "-Xmx128m",
            log4j,
            "-cp",
            f"{cluster.lib}/*",
            tool,
            "format",
            "--cluster-id",
            cluster.cluster_id,
            "--config",
            str(node.config_path),
            "--ignore-formatted",
            *(cluster.sasl_ssl.scram_arguments() if cluster.sasl_ssl else []),
        ]
        runs.append(
            subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for node, run in zip(cluster.nodes, runs, strict=True):
        output, _ = run.communicate(timeout=120)
        if run.returncode != 0:
            raise EmbeddedStartError(
                f"Formatting the storage of Kafka node {node.node_id} failed:\n{output.strip()}"
            )


def _start_all(cluster: RunningKafkaCluster, deadline: float, ports_chosen: bool) -> None:
    """Start every node at once (a controller quorum needs a majority to answer anything)
    and wait until each broker lists all of them; on failure stop them all and raise."""
    started = []
    try:
        for node in cluster.nodes:
            launch = cluster._launch(node, cluster.broker_ids, node.port)
            process, offset = spawn(launch)
            node.process = process
            started.append((node, launch, process, offset))
        pending = list(started)
        while pending:
            for item in list(pending):
                _, launch, process, offset = item
                if process.poll() is not None:
                    raise exit_failure(launch, process, offset, ports_chosen)
                if launch.is_ready(process):
                    pending.remove(item)
            if pending and time.monotonic() >= deadline:
                raise not_ready_failure(pending[0][1], pending[0][3])
            time.sleep(0.2)
    except BaseException:
        cluster.stop(timeout=10.0)
        raise


def start_kafka_cluster(
    data_dir: Path,
    *,
    brokers: int = 3,
    version: str = KAFKA_VERSION,
    ports: list[int] | None = None,
    ready_timeout: float = 120.0,
    settings_path: Path = BROKER_PROPERTIES,
    sasl_ssl: SaslSslListener | None = None,
) -> RunningKafkaCluster:
    """Start a KRaft cluster of `brokers` combined nodes on 127.0.0.1 and return once every
    broker's Metadata answer lists all of them.

    Under `data_dir`: `node-<i>/server.properties`, `node-<i>/data` (the log dir) and
    `logs/kafka-<i>.log`. A data dir used before keeps its cluster id, records and ports (the
    quorum remembers the controllers' addresses). `ports` (one per node) fixes the client
    ports of a new one; otherwise free ones are chosen, and chosen again if another process
    takes one first. `sasl_ssl` adds a client listener requiring TLS and SASL on its own
    ports (the brokers keep talking PLAINTEXT among themselves); its SCRAM users are stored
    when a node's storage is first formatted. Raises EmbeddedStartError on failure.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if ports is not None and len(ports) != brokers:
        raise ValueError(f"{brokers} nodes need {brokers} ports, got {ports}")
    if sasl_ssl is not None and len(sasl_ssl.ports) != brokers:
        raise ValueError(f"{brokers} nodes need {brokers} SASL_SSL ports, got {sasl_ssl.ports}")
    java = shutil.which("java")
    if java is None:
        raise EmbeddedStartError("No `java` on PATH: Apache Kafka 4 needs Java 17 or later.")
    lib = resolve_kafka(version)
    settings = read_properties(settings_path)
    id_file = data_dir / "cluster.id"
    if not id_file.is_file():
        id_file.write_text(new_cluster_id() + "\n")
    cluster_id = id_file.read_text().strip()

    # The quorum keeps the controllers' addresses in its log: a data dir used before is
    # started again on the ports it had.
    ports_file = data_dir / "ports"
    saved = (
        [tuple(map(int, line.split())) for line in ports_file.read_text().splitlines()]
        if ports_file.is_file()
        else []
    )
    if saved and len(saved) != brokers:
        raise EmbeddedStartError(f"{data_dir} holds a cluster of {len(saved)} nodes, not {brokers}")
    deadline = time.monotonic() + ready_timeout
    fixed = ports is not None or bool(saved)
    attempts = 1 if fixed else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        client_ports = ports or [p[0] for p in saved] or [free_port() for _ in range(brokers)]
        controller_ports = [p[1] for p in saved] or [free_port() for _ in range(brokers)]
        cluster = RunningKafkaCluster(data_dir, cluster_id, lib, java, sasl_ssl=sasl_ssl)
        cluster.nodes = [
            KafkaNode(
                node_id=i,
                port=client_ports[i],
                controller_port=controller_ports[i],
                config_path=data_dir / f"node-{i}" / "server.properties",
                log_path=data_dir / "logs" / f"kafka-{i}.log",
                secure_port=sasl_ssl.ports[i] if sasl_ssl else None,
            )
            for i in range(brokers)
        ]
        _write_configs(cluster, settings)
        if attempt == 1:
            _format_storage(cluster)
        try:
            _start_all(cluster, deadline, ports_chosen=not fixed)
        except PortInUseError:
            if attempt == attempts:
                raise
            log.warning("a port was taken before Kafka could bind it, trying other ports")
            continue
        ports_file.write_text("".join(f"{n.port} {n.controller_port}\n" for n in cluster.nodes))
        log.info(
            "kafka cluster %s ready on %s (pids %s)",
            cluster_id,
            cluster.bootstrap_servers,
            [n.pid for n in cluster.nodes],
        )
        return cluster
    raise AssertionError("unreachable")  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    """`python -m hotline.embedded.kafka_cluster --data-dir DIR`: run until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="where nodes keep data")
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--version", default=KAFKA_VERSION, help="Apache Kafka version")
    parser.add_argument("--port", type=int, action="append", help="client port, once a node")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def on_sigterm(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    try:
        cluster = start_kafka_cluster(
            args.data_dir, brokers=args.brokers, version=args.version, ports=args.port
        )
    except EmbeddedStartError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        print(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}", flush=True)
        for node in cluster.nodes:
            print(f"node {node.node_id}: {node.address} pid {node.pid}", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
