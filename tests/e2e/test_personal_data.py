"""Personal data stays where it belongs: one ticket's whole life through a real `hotline up`,
then everything the system wrote is scanned for the citizen's number and words.

The number may be kept only masked and hashed in intake's tickets, the request text only in
their `content` column (and shown by intake's API to those who may read it); neither may
reach a log, a topic (dead letters included), another table, an export or a metric. The
keyed hash alone also travels in intake's `ticket.submitted` events to metrics's ticket
facts, where an auditor's search by number finds it (never the number itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import dlq_topic
from shared.privacy import PhoneHasher, load_or_create_key
from shared.settings import Settings
from tests.e2e.test_stack import SERVICES, StackProcess
from tests.support import eventually, headers_of, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.embedded]

PHONE = "+86 139-8765-4321"
MASKED = "139****4321"
PHONE_FORMS = (PHONE, "13987654321", "+8613987654321", "139 8765 4321", "139-8765-4321")
PHONE_TAIL = "87654321"
"""The subscriber digits: any run of digits (spaces and hyphens between them ignored) that
holds them is the number, whatever the separators (`8765-4321`, `139 8765 4321`, ...)."""

CANARY = "PII-CANARY-7f3a"
CONTENT = f"我家楼下路灯坏了三个月了，晚上很黑 {CANARY}"
FRAGMENT = "路灯坏了三个月"


def _written_forms(text: str) -> tuple[str, ...]:
    """`text` as a log, a JSON value, a URL or a bytea column may write it."""
    escaped = json.dumps(text)[1:-1]  # JSON with ensure_ascii: \u8def...
    upper = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped)
    return (text, escaped, upper, urllib.parse.quote(text), text.encode().hex())


CONTENT_FORMS = (*_written_forms(CONTENT), *_written_forms(FRAGMENT), CANARY, CANARY.encode().hex())

DEPARTMENT = "医保局"
"""The department of README's walk-through; the embedded stack has its desk key."""
UNANSWERED_DEPARTMENT = "人社"
"""Another embedded desk: its work order stays unanswered, so the audit exports have a row."""

PHONE_KIND, MASKED_KIND, HASH_KIND, CONTENT_KIND = (
    "phone number",
    "masked phone number",
    "phone hash",
    "request text",
)

DIGIT_RUN = re.compile(r"\d+(?:[ \-]\d+)*")
POSTGRES_OWN = ("pg_catalog", "information_schema", "pg_toast")


@dataclass
class Scanner:
    """Finds the citizen's data in texts and keeps a finding for each place it is not allowed
    (one per source, kind and place: a column's rows make one finding, with the first row)."""

    phone_hash: str
    found: dict[tuple[str, str, str], str] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)

    def marks(self, text: str) -> dict[str, str]:
        """Which kinds of the citizen's data `text` holds, each with where in it."""
        found: dict[str, str] = {}
        for form in PHONE_FORMS:
            if form in text:
                found.setdefault(PHONE_KIND, _around(text, text.index(form), len(form)))
        normal = unicodedata.normalize("NFKC", text)
        for run in DIGIT_RUN.finditer(normal):
            if PHONE_TAIL in re.sub(r"[ \-]", "", run.group()):
                found.setdefault(PHONE_KIND, _around(normal, run.start(), len(run.group())))
        if MASKED in text:
            found[MASKED_KIND] = _around(text, text.index(MASKED), len(MASKED))
        lowered = text.lower()
        if self.phone_hash in lowered:
            found[HASH_KIND] = _around(text, lowered.index(self.phone_hash), 64)
        for form in CONTENT_FORMS:
            if form in text:
                found.setdefault(CONTENT_KIND, _around(text, text.index(form), len(form)))
        return found

    def scan(
        self,
        source: str,
        where: str,
        text: str,
        allowed: frozenset[str] = frozenset(),
        detail: str = "",
    ) -> None:
        """Record a finding for each kind of data in `text` not `allowed` there."""
        self.scanned[source] = self.scanned.get(source, 0) + 1
        for kind, context in self.marks(text).items():
            if kind not in allowed:
                self.found.setdefault((source, kind, where), f"{detail}...{context}...")

    @property
    def findings(self) -> list[str]:
        """Each place the citizen's data was found and should not be."""
        return [
            f"[{source}] {kind} in {where}: {context}"
            for (source, kind, where), context in self.found.items()
        ]


def _around(text: str, start: int, length: int, margin: int = 60) -> str:
    return repr(text[max(0, start - margin) : start + length + margin])


# -- driving the lifecycle -------------------------------------------------------------------


async def posted(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers) -> Any:
    """POST until the service knows the ticket (409 `not_yet_known` with Retry-After); 201."""

    async def attempt() -> Any:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code == 409 and response.json().get("code") == "not_yet_known":
            assert response.headers.get("Retry-After"), response.headers
            return None
        assert response.status_code == 201, f"POST {url}: {response.status_code} {response.text}"
        return response.json()

    return await eventually(attempt, timeout=30, interval=0.1, message=f"POST {url}")


async def live_ticket(stack: StackProcess, client: httpx.AsyncClient) -> str:
    """One ticket's life as README's curl walk-through plays it, through redo to satisfied,
    plus a work order left unanswered; returns the ticket id."""
    intake, dispatch, followup = (stack.url(name) for name in ("intake", "dispatch", "followup"))
    operator, callback = stack.auth("operator"), stack.auth("callback")
    desk = stack.auth("department", DEPARTMENT)
    submitted = await client.post(
        f"{intake}/tickets",
        json={
            "city": "沈阳",
            "channel": "phone",
            "scenario": "市政设施",
            "category": "report",
            "content": CONTENT,
            "citizen_phone": PHONE,
            "call": {"answered": True, "wait_seconds": 12.5, "resolved_at_first_contact": False},
        },
        headers={**stack.auth("evaluator"), "Idempotency-Key": "pii-demo-1"},
    )
    assert submitted.status_code == 201, submitted.text
    ticket_id = submitted.json()["ticket_id"]

    transfers = f"{dispatch}/tickets/{ticket_id}/transfers"
    for mode, connected in (("transfer", False), ("three_way", True)):
        body = {"department": DEPARTMENT, "mode": mode, "connected": connected}
        await posted(client, transfers, body, operator)

    async def due() -> bool:
        page = (await client.get(f"{followup}/callbacks/due", headers=callback)).json()
        return ticket_id in {item["ticket_id"] for item in page["items"]}

    async def reopened() -> bool:
        view = await client.get(f"{dispatch}/tickets/{ticket_id}", headers=operator)
        return view.json()["reopened"]

    for satisfaction, quality in (("unsatisfied", "partial"), ("satisfied", "definite")):
        order = await posted(
            client,
            f"{dispatch}/tickets/{ticket_id}/work-orders",
            {"department": DEPARTMENT},
            operator,
        )
        await posted(
            client,
            f"{dispatch}/work-orders/{order['work_order_id']}/replies",
            {"content": "已派人更换路灯，请留意", "quality": quality},
            desk,
        )
        await eventually(due, timeout=30, interval=0.1, message="the callback due")
        await posted(
            client,
            f"{followup}/tickets/{ticket_id}/callbacks",
            {"reached": True, "satisfaction": satisfaction},
            callback,
        )
        if satisfaction == "unsatisfied":
            await eventually(reopened, timeout=30, interval=0.1, message="the ticket reopened")
    await eventually(
        lambda: _not(reopened()), timeout=30, interval=0.1, message="the reopen closed"
    )
    await posted(
        client,
        f"{dispatch}/tickets/{ticket_id}/work-orders",
        {"department": UNANSWERED_DEPARTMENT},
        operator,
    )
    return ticket_id


async def _not(check) -> bool:
    return not await check


async def poison_intake_events(bootstrap: str, ticket_id: str) -> None:
    """A record that is no CloudEvent, for the consumers of `intake.events` to dead-letter."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            Settings().topic("intake"),
            b"{",
            key=ticket_id.encode(),
            headers=[("ce_type", b"hotline.ticket.submitted.v1")],
        )
    finally:
        await producer.stop()


async def metrics_counted_everything(stack: StackProcess, client: httpx.AsyncClient, ticket_id):
    """Wait until metrics has every event of the ticket, and until every consumer of
    `intake.events` has dead-lettered the poison record."""
    auditor = stack.auth("auditor")

    async def counted() -> bool:
        rates = (await client.get(f"{stack.url('metrics')}/rates", headers=auditor)).json()
        got = {name: (r["numerator"], r["denominator"]) for name, r in rates["rates"].items()}
        audit = await client.get(f"{stack.url('metrics')}/audit/unanswered", headers=auditor)
        return (
            got["transfer_failure_rate"] == (1, 1)
            and got["three_way_failure_rate"] == (0, 1)
            and got["unanswered_rate"] == (1, 3)
            and got["satisfaction_rate"] == (1, 2)
            and got["definite_reply_rate"] == (1, 2)
            and [item["ticket_id"] for item in audit.json()["items"]] == [ticket_id]
        )

    await eventually(counted, timeout=30, interval=0.2, message="metrics counting the ticket")
    bootstrap = stack.stack_env()["KAFKA_BOOTSTRAP_SERVERS"]

    async def dead_lettered_by_every_consumer() -> bool:
        letters = await read_topic(bootstrap, dlq_topic(Settings().topic("intake")), at_least=1)
        return {headers_of(r)["dlq_service"] for r in letters} >= {
            b"dispatch",
            b"followup",
            b"metrics",
        }

    await eventually(
        dead_lettered_by_every_consumer, timeout=30, message="the poison dead-lettered"
    )


# -- the scans -------------------------------------------------------------------------------


def scan_logs(scanner: Scanner, data_dir: Path, when: str, ticket_id: str) -> None:
    """Every line of every log file of the stack (the services', the broker's, PostgreSQL's)."""
    logs = sorted(path for path in (data_dir / "logs").rglob("*") if path.is_file())
    names = {path.name for path in logs}
    expected = {f"{name}.log" for name in SERVICES} | {"broker.log", "postgres.log"}
    assert expected <= names, f"log files {sorted(names)}, expected at least {sorted(expected)}"
    for path in logs:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            scanner.scan(f"log {when}", f"{path.relative_to(data_dir)} line {number}", line)
    told = [path.name for path in logs if ticket_id in path.read_text(errors="replace")]
    assert "dispatch.log" in told, f"the logs never mention the ticket (only {told}): a log moved?"


async def end_offsets(bootstrap: str, topic: str) -> int:
    """How many records the broker says `topic` has (a lower bound on tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await eventually(lambda: consumer.partitions_for_topic(topic), message=topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def scan_topics(scanner: Scanner, bootstrap: str, ticket_id: str) -> dict[str, int]:
    """Every record of every topic: key, value, header values. Returns records per topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(await admin.list_topics())
    finally:
        await admin.close()
    counts: dict[str, int] = {}
    for topic in topics:
        at_least = await end_offsets(bootstrap, topic)
        records = await read_topic(bootstrap, topic, at_least=at_least)
        counts[topic] = len(records)
        for record in records:
            where = f"topic {topic} partition {record.partition} offset {record.offset}"
            parts = [("key", record.key or b""), ("value", record.value or b"")]
            parts += [(f"header {name}", value or b"") for name, value in record.headers]
            for part, raw in parts:
                text = raw.decode("utf-8", errors="replace")
                allowed = HASH_IN_TOPICS.get((topic, part), frozenset())
                scanner.scan("topic", f"{where} {part}", text, allowed)
        if topic == Settings().topic("dispatch"):
            ours = [r for r in records if r.key == ticket_id.encode()]
            assert len(ours) >= 7, f"{topic}: {len(ours)} records of the ticket, wanted 7"
    return counts


HASH_IN_TOPICS = {(Settings().topic("intake"), "value"): frozenset({HASH_KIND})}
"""The keyed hash in `ticket.submitted` events (`citizen_phone_hash`), for metrics's search."""
HASH_IN_METRICS = ("ticket_facts", "citizen_phone_hash")
"""Where metrics keeps it (and intake's outbox the event, until it is purged)."""

ALLOWED_IN_DATABASE = {
    "content": frozenset({CONTENT_KIND}),
    "citizen_phone_masked": frozenset({MASKED_KIND}),
    "citizen_phone_hash": frozenset({HASH_KIND}),
}
"""Columns of intake's `tickets` and what of the citizen each may hold; nothing elsewhere."""


async def scan_database(scanner: Scanner, database_url: str, ticket_id: str) -> dict[str, int]:
    """Every row of every table outside PostgreSQL's own schemas, column by column."""
    intake_tickets = (Settings().schema_of("intake"), "tickets")
    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    rows_per_table: dict[str, int] = {}
    ours = None
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema <> ALL($1::text[]) "
            "ORDER BY 1, 2",
            list(POSTGRES_OWN),
        )
        for schema, table in tables:
            quoted = f'"{schema}"."{table}"'
            rows = await connection.fetch(f"SELECT row_to_json(t)::text FROM {quoted} t")
            rows_per_table[f"{schema}.{table}"] = len(rows)
            for number, (row_json,) in enumerate(rows, 1):
                row = json.loads(row_json)
                for column, value in row.items():
                    text = (
                        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                    )
                    allowed = frozenset()
                    if (schema, table) == intake_tickets:
                        allowed = ALLOWED_IN_DATABASE.get(column, frozenset())
                    elif (schema, table, column) == (intake_tickets[0], "outbox", "data"):
                        allowed = frozenset({HASH_KIND})  # the event, as sent
                    elif (
                        schema == Settings().schema_of("metrics")
                        and (
                            table,
                            column,
                        )
                        == HASH_IN_METRICS
                    ):
                        allowed = frozenset({HASH_KIND})
                    where = f"table {quoted} column {column}"
                    scanner.scan("database", where, text, allowed, detail=f"(row {number}) ")
                if (schema, table) == intake_tickets and row.get("ticket_id") == ticket_id:
                    ours = row
    finally:
        await connection.close()
    # Intake keeps what it may: the text, the number masked and as the keyed hash.
    assert ours is not None, f"no row of the ticket in {intake_tickets}: {rows_per_table}"
    assert ours["content"] == CONTENT
    assert ours["citizen_phone_masked"] == MASKED
    assert ours["citizen_phone_hash"] == scanner.phone_hash
    return rows_per_table


async def audit_cli_csv(metrics_url: str, token: str) -> str:
    """`hotline audit unanswered --csv`, as an auditor runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        "audit",
        "unanswered",
        "--csv",
        "--url",
        metrics_url,
        env={**os.environ, "HOTLINE_API_KEY": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    return out.decode("utf-8", errors="replace") + err.decode("utf-8", errors="replace")


async def scan_exports_metrics_and_answers(
    scanner: Scanner, stack: StackProcess, client: httpx.AsyncClient, ticket_id: str
) -> None:
    auditor = stack.auth("auditor")
    metrics = stack.url("metrics")
    exported = await client.get(
        f"{metrics}/audit/unanswered", params={"format": "csv"}, headers=auditor
    )
    assert exported.status_code == 200, exported.text
    cli = await audit_cli_csv(metrics, auditor["Authorization"].removeprefix("Bearer "))
    # The auditor's search by number (written another way) finds the ticket; the number is
    # then searched for in the logs with everything else.
    found = await client.get(
        f"{metrics}/tickets", params={"phone": PHONE_FORMS[-1], "format": "csv"}, headers=auditor
    )
    assert found.status_code == 200, found.text
    timeline = await client.get(f"{metrics}/tickets/{ticket_id}/timeline", headers=auditor)
    assert timeline.status_code == 200, timeline.text
    scanner.scan("api", "metrics GET /tickets/{id}/timeline", timeline.text)
    for where, text in (
        ("GET /audit/unanswered?format=csv", exported.text),
        ("hotline audit unanswered --csv", cli),
        ("GET /tickets?phone=...&format=csv", found.text),
    ):
        assert ticket_id in text, f"{where} lists no row of the ticket:\n{text}"
        scanner.scan("csv export", where, text)

    for name in SERVICES:
        exposition = await client.get(f"{stack.url(name)}/metrics")
        assert exposition.status_code == 200
        assert "hotline_" in exposition.text, exposition.text[:500]
        scanner.scan("prometheus", f"{name} GET /metrics", exposition.text)

    # Intake shows the text (and the masked number) to those who may read the ticket.
    for role in ("auditor", "evaluator"):
        answer = await client.get(
            f"{stack.url('intake')}/tickets/{ticket_id}", headers=stack.auth(role)
        )
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        assert shown["content"] == CONTENT
        assert shown["citizen_phone_masked"] == MASKED
        scanner.scan(
            "api",
            f"intake GET /tickets/{{id}} as {role}",
            answer.text,
            frozenset({CONTENT_KIND, MASKED_KIND}),
        )
    # Dispatch and followup never had them.
    for name, role in (("dispatch", "operator"), ("followup", "callback")):
        answer = await client.get(
            f"{stack.url(name)}/tickets/{ticket_id}", headers=stack.auth(role)
        )
        assert answer.status_code == 200, answer.text
        scanner.scan("api", f"{name} GET /tickets/{{id}} as {role}", answer.text)


async def test_the_citizens_number_and_words_stay_where_they_belong():
    stack = StackProcess()
    try:
        await stack.start()
        key = load_or_create_key(Settings().phone_hash_key, stack.data_dir / "phone-hash.key")
        scanner = Scanner(PhoneHasher(key).hash(PHONE))
        env = stack.stack_env()
        bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
        async with httpx.AsyncClient(timeout=10) as client:
            ticket_id = await live_ticket(stack, client)
            await poison_intake_events(bootstrap, ticket_id)
            await metrics_counted_everything(stack, client, ticket_id)

            scan_logs(scanner, stack.data_dir, "while running", ticket_id)
            topics = await scan_topics(scanner, bootstrap, ticket_id)
            tables = await scan_database(scanner, env["DATABASE_URL"], ticket_id)
            await scan_exports_metrics_and_answers(scanner, stack, client, ticket_id)

        assert await stack.interrupt() == 0, "".join(stack.output)
        scan_logs(scanner, stack.data_dir, "after the stop", ticket_id)
        scanner.scan("hotline up output", "its stdout and stderr", "".join(stack.output))
    finally:
        await stack.close()

    assert scanner.findings == [], (
        f"the citizen's data found where it does not belong ({len(scanner.findings)}):\n"
        + "\n".join(scanner.findings)
    )
    # None of the scans was vacuous.
    intake_dlq = dlq_topic(Settings().topic("intake"))
    assert topics.get(intake_dlq, 0) >= 3, f"dead letters: {topics}"
    expected = {"intake": 2, "dispatch": 7, "followup": 2}  # intake's: the ticket and the poison
    for service, count in expected.items():
        assert topics.get(Settings().topic(service), 0) >= count, f"records per topic: {topics}"
    for service in SERVICES:
        schema = Settings().schema_of(service)
        assert sum(n for t, n in tables.items() if t.startswith(f"{schema}.")) > 0, tables
    assert set(scanner.scanned) >= {
        "log while running",
        "log after the stop",
        "topic",
        "database",
        "csv export",
        "prometheus",
        "api",
        "hotline up output",
    }, scanner.scanned
