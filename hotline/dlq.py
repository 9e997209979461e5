"""`hotline dlq`: list dead letters, show one, replay them to the topic they came from.

It reads the dead-letter topics (`<topic>.dlq`) without joining a consumer group: it assigns
their partitions and reads up to the end offsets found at the start, so it ends, and it
moves nobody's offsets. A replay puts the original record back on its topic with acks=all;
each consumer applies it at most once, because consumers record the event ids they applied.
The broker is the one of the environment (`KAFKA_BOOTSTRAP_SERVERS`), else the one of the
stack `hotline up` runs from the data folder.
"""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hotline.stack_env import STACK_ENV_FILE, stack_settings
from shared.kafka import (
    DLQ_HEADER_PREFIX,
    DLQ_SUFFIX,
    DlqHeader,
    connection_options,
    start_producer,
)
from shared.offsets import end_offsets, topic_partitions
from shared.settings import Settings

app = typer.Typer(
    help="Dead letters: list them, show one, replay them to the topic they came from.",
    no_args_is_help=True,
    add_completion=False,
)

NOTHING = 1
"""Exit status when nothing was found, or a replay was refused."""
USAGE = 2
"""Exit status for arguments that do not fit together, or a broker that cannot be reached."""

T = TypeVar("T")

_REASON_CHARS = 70
_FIELD_CHARS = 60


class NotFound(Exception):
    """No record at the given coordinates (or no dead-letter topic at all)."""


class NotReplayable(Exception):
    """A dead letter that cannot be put back as the original record."""


@dataclass(frozen=True, order=True)
class Coordinates:
    """Where a record is: topic, partition, offset."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a dead-letter topic, with what its `dlq_*` headers say."""

    at: Coordinates
    key: bytes | None
    value: bytes | None
    """None when read without values (`list` needs only the headers)."""
    headers: tuple[tuple[str, bytes], ...]
    size: int
    """The size of the value in the dead-letter topic."""

    def header(self, name: str) -> bytes | None:
        """The last value of a header (None if absent)."""
        found = None
        for header_name, raw in self.headers:
            if header_name == name:
                found = raw
        return found

    def text(self, name: str) -> str:
        """A header as text ('' if absent), undecodable bytes escaped."""
        raw = self.header(name)
        return "" if raw is None else raw.decode(errors="backslashreplace")

    @property
    def original(self) -> Coordinates | None:
        """Where the record came from, if the headers say so."""
        topic = self.header(DlqHeader.TOPIC)
        try:
            partition = int(self.header(DlqHeader.PARTITION) or b"")
            offset = int(self.header(DlqHeader.OFFSET) or b"")
        except ValueError:
            return None
        if topic is None:
            return None
        return Coordinates(topic.decode(errors="backslashreplace"), partition, offset)

    @property
    def truncated(self) -> bool:
        """True when this is not the whole original record."""
        return self.header(DlqHeader.TRUNCATED) == b"true"

    @property
    def original_bytes(self) -> int:
        """The size of the original value (the copy's own size when not truncated)."""
        try:
            return int(self.header(DlqHeader.ORIGINAL_BYTES) or b"")
        except ValueError:
            return self.size


@dataclass
class Letter:
    """One original record that was dead-lettered, and every copy of it found (each
    consumer of its topic writes one; a retried batch may write another)."""

    copies: list[DeadLetterRecord] = field(default_factory=list)

    @property
    def first(self) -> DeadLetterRecord:
        """The copy read first (the one `list` names)."""
        return self.copies[0]

    @property
    def services(self) -> list[str]:
        """The services that dead-lettered it."""
        return sorted({copy.text(DlqHeader.SERVICE) or "?" for copy in self.copies})

    def whole_copy(self) -> DeadLetterRecord | None:
        """A copy holding the whole record, if any."""
        return next((copy for copy in self.copies if not copy.truncated), None)


def group_by_original(records: Iterable[DeadLetterRecord]) -> list[Letter]:
    """The records grouped by the original record they copy (a record without dead-letter
    headers stands alone), in the order first read."""
    letters: dict[Coordinates, Letter] = {}
    for record in records:
        letters.setdefault(record.original or record.at, Letter()).copies.append(record)
    return list(letters.values())


@dataclass(frozen=True)
class Replay:
    """The original record of a dead letter, ready to be put back on its topic."""

    source: DeadLetterRecord
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def replay_of(record: DeadLetterRecord) -> Replay:
    """The original record: the same key, value and headers, without the dead-letter
    headers, plus `dlq_replayed_from`. NotReplayable for a copy that is not whole."""
    original = record.original
    if original is None:
        raise NotReplayable(
            f"{record.at} is not a dead letter (it has no {DlqHeader.TOPIC}, "
            f"{DlqHeader.PARTITION} and {DlqHeader.OFFSET} headers): nothing to replay it to"
        )
    if record.truncated:
        raise NotReplayable(
            f"{record.at} is a truncated copy of {original} (kept {_size(record.size)}"
            f" of {_size(record.original_bytes)}): the whole record is not in the dead-letter "
            f"topic. It may still be on {original.topic} at offset {original.offset} until its "
            "retention passes; fix and publish it again at its source"
        )
    headers = [(n, v) for n, v in record.headers if not n.startswith(DLQ_HEADER_PREFIX)]
    headers.append((DlqHeader.REPLAYED_FROM, str(record.at).encode()))
    return Replay(record, original.topic, record.key, record.value, headers)


def printable(text: str, *, newlines: bool = False) -> str:
    """`text` safe for a terminal: control and format characters (escape sequences
    included) shown as `\\x..` / `\\u....`; newlines kept only if asked."""
    out = []
    for char in text:
        if char == "\n" and newlines:
            out.append(char)
        elif unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _short(text: str, limit: int) -> str:
    line = printable(text.splitlines()[0] if text.strip() else text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


def letter_row(letter: Letter) -> list[str]:
    """The columns of one line of `list`."""
    first = letter.first
    return [
        str(first.at),
        str(first.original or "?"),
        ",".join(_short(s, 20) for s in letter.services),
        _short(first.text("ce_type") or "-", _FIELD_CHARS),
        _short(first.text("ce_id") or "-", _FIELD_CHARS),
        _size(first.original_bytes),
        "truncated" if first.truncated else "whole",
        _short(first.text(DlqHeader.REASON) or "-", _REASON_CHARS),
    ]


LIST_HEADER = ["DEAD LETTER", "ORIGINAL", "SERVICE", "TYPE", "EVENT ID", "SIZE", "COPY", "REASON"]


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines, columns padded to the widest cell (the last one left as it is)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def value_excerpt(value: bytes | None, max_bytes: int) -> tuple[str, bool]:
    """The value for a terminal: pretty JSON if it is JSON, else escaped text; at most
    about `max_bytes` characters. Returns the text and whether it was cut."""
    if value is None:
        return "(no value)", False
    try:
        text = json.dumps(json.loads(value), ensure_ascii=False, indent=2)
    except ValueError:
        text = value[: max_bytes + 1].decode(errors="backslashreplace")
        cut = len(value) > max_bytes
        return printable(text[:max_bytes], newlines=True), cut or len(text) > max_bytes
    return printable(text[:max_bytes], newlines=True), len(text) > max_bytes


# -- the broker ------------------------------------------------------------------------------


class BrokerUnreachable(Exception):
    """The broker did not answer."""


@asynccontextmanager
async def reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (it commits nothing)."""
    consumer = AIOKafkaConsumer(
        **connection_options(settings),
        client_id="hotline-dlq",
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BrokerUnreachable(str(exc)) from exc
    try:
        yield consumer
    finally:
        await consumer.stop()


async def dlq_topics(consumer: AIOKafkaConsumer, settings: Settings) -> list[str]:
    """The dead-letter topics of this stack (its topic prefix), sorted."""
    return sorted(
        topic
        for topic in await consumer.topics()
        if topic.endswith(DLQ_SUFFIX) and topic.startswith(settings.topic_prefix)
    )


async def read_all(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    *,
    values: bool = True,
    stall_seconds: float = 30.0,
) -> AsyncIterator[DeadLetterRecord]:
    """Every record of `topics` from the beginning up to the end offsets found now (without
    their values unless `values`)."""
    found = await topic_partitions(consumer, topics)
    partitions = [tp for topic in topics for tp in found.get(topic, [])]
    if not partitions:
        return
    starts = await consumer.beginning_offsets(partitions)
    ends = await end_offsets(consumer, partitions)
    consumer.assign(partitions)
    left = [tp for tp in partitions if ends[tp] > starts[tp]]
    for tp in left:
        consumer.seek(tp, starts[tp])
    last_progress = time.monotonic()
    while left:
        batch = await consumer.getmany(*left, timeout_ms=500)
        for tp, records in sorted(batch.items()):
            for record in records:
                if record.offset < ends[tp]:
                    yield _record(record, keep_value=values)
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_seconds:
            raise KafkaError(f"no record arrived for {stall_seconds:.0f} s while reading {left}")
        left = [tp for tp in left if await consumer.position(tp) < ends[tp]]


async def read_one(consumer: AIOKafkaConsumer, at: Coordinates) -> DeadLetterRecord:
    """The record at `at`; NotFound if the topic, partition or offset is not there."""
    tp = TopicPartition(at.topic, at.partition)
    if tp not in (await topic_partitions(consumer, [at.topic])).get(at.topic, []):
        raise NotFound(f"no partition {at.partition} of a topic {at.topic} on the broker")
    start = (await consumer.beginning_offsets([tp]))[tp]
    end = (await end_offsets(consumer, [tp]))[tp]
    consumer.assign([tp])
    if not start <= at.offset < end:
        raise NotFound(
            f"no record at {at}: {at.topic}/{at.partition} holds offsets {start}-{end - 1}"
        )
    consumer.seek(tp, at.offset)
    while await consumer.position(tp) <= at.offset:
        batch = await consumer.getmany(tp, timeout_ms=2000)
        if not batch:
            raise NotFound(f"no record at {at} arrived (is the broker busy?)")
        for record in batch.get(tp, []):
            if record.offset == at.offset:
                return _record(record)
    raise NotFound(f"no record at {at} (compacted away?)")


def _record(record: Any, *, keep_value: bool = True) -> DeadLetterRecord:
    return DeadLetterRecord(
        at=Coordinates(record.topic, record.partition, record.offset),
        key=record.key,
        value=record.value if keep_value else None,
        headers=tuple(record.headers),
        size=len(record.value or b""),
    )


async def republish(settings: Settings, replays: Sequence[Replay]) -> list[Coordinates]:
    """Put each record back on its topic, waiting for every in-sync replica."""
    try:
        producer = await start_producer(settings, client_id="hotline-dlq-replay")
    except KafkaError as exc:
        raise BrokerUnreachable(str(exc)) from exc
    try:
        written = []
        for replay in replays:
            metadata = await producer.send_and_wait(
                replay.topic, replay.value, key=replay.key, headers=replay.headers
            )
            written.append(Coordinates(replay.topic, metadata.partition, metadata.offset))
        return written
    finally:
        await producer.stop()


def _run(settings: Settings, action: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a broker conversation; a broker that does not answer is said plainly."""
    try:
        return asyncio.run(action())
    except (BrokerUnreachable, KafkaError, OSError) as exc:
        typer.echo(
            f"error: cannot read from the broker at {settings.kafka_bootstrap_servers} "
            f"({type(exc).__name__}: {exc}). Is `hotline up` running from this data folder "
            f"({settings.data_dir / STACK_ENV_FILE}), or is KAFKA_BOOTSTRAP_SERVERS set?",
            err=True,
        )
        raise typer.Exit(USAGE) from exc


def _fail(message: str, status: int = NOTHING) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(status)


# -- the commands ----------------------------------------------------------------------------

TopicOption = Annotated[
    str | None,
    typer.Option(help="Only letters of this topic (its name, or its dead-letter topic's)."),
]
ServiceOption = Annotated[str | None, typer.Option(help="Only letters this service wrote.")]


async def _letters(
    settings: Settings, *, topic: str | None, service: str | None, values: bool
) -> tuple[list[str], list[DeadLetterRecord]]:
    """The dead-letter topics (of `topic`, if given) and their records (by `service`, if
    given), in topic, partition and offset order."""
    async with reader(settings) as consumer:
        topics = await dlq_topics(consumer, settings)
        if topic is not None:
            topics = [t for t in topics if t == topic or t == f"{topic}{DLQ_SUFFIX}"]
        records = [
            record
            async for record in read_all(consumer, topics, values=values)
            if service is None or record.text(DlqHeader.SERVICE) == service
        ]
    return topics, sorted(records, key=lambda record: record.at)


@app.command("list")
def list_letters(
    topic: TopicOption = None,
    service: ServiceOption = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many lines.")] = 100,
    copies: Annotated[
        bool, typer.Option("--copies", help="One line per record, not per original.")
    ] = False,
) -> None:
    """One line per dead letter (each original once, however many copies), oldest first."""
    settings = stack_settings()
    topics, records = _run(
        settings, lambda: _letters(settings, topic=topic, service=service, values=False)
    )
    if not topics:
        raise _fail(
            f"no dead-letter topic{f' of {topic}' if topic else ''} on the broker at "
            f"{settings.kafka_bootstrap_servers} (topic prefix {settings.topic_prefix!r})"
        )
    letters = [Letter([r]) for r in records] if copies else group_by_original(records)
    if not letters:
        raise _fail(f"no dead letters in {', '.join(topics)}")
    shown = letters[:limit]
    for line in aligned([LIST_HEADER, *(letter_row(letter) for letter in shown)]):
        typer.echo(line.rstrip())
    typer.echo(
        f"{len(letters)} dead letter(s), {len(records)} record(s) in {len(topics)} topic(s); "
        f"{len(shown)} shown"
    )


@app.command()
def show(
    dlq_topic: Annotated[str, typer.Argument(metavar="DLQ_TOPIC")],
    partition: Annotated[int, typer.Argument(min=0, metavar="PARTITION")],
    offset: Annotated[int, typer.Argument(min=0, metavar="OFFSET")],
    max_bytes: Annotated[
        int, typer.Option(min=1, help="Show at most this many characters of the value.")
    ] = 4096,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write the whole value here."),
    ] = None,
) -> None:
    """Every header of one dead letter, and its value (pretty JSON, or escaped text)."""
    settings = stack_settings()
    at = Coordinates(dlq_topic, partition, offset)

    async def fetch() -> DeadLetterRecord:
        async with reader(settings) as consumer:
            return await read_one(consumer, at)

    try:
        record = _run(settings, fetch)
    except NotFound as exc:
        raise _fail(f"{exc} (`hotline dlq list` shows the dead letters there are)") from exc
    typer.echo(f"dead letter {record.at}")
    typer.echo(f"  original: {record.original or '? (no dlq_topic header)'}")
    typer.echo(f"  copy:     {'truncated' if record.truncated else 'whole'}")
    typer.echo(f"  key:      {_excerpt_line(record.key, max_bytes)}")
    typer.echo("headers:")
    for name, raw in record.headers:
        typer.echo(f"  {printable(name)}: {_excerpt_line(raw, max_bytes)}")
    size = f"{record.size} bytes"
    if record.truncated:
        size = f"{record.size} of the original {record.original_bytes} bytes"
    if output is not None:
        output.write_bytes(record.value or b"")
        typer.echo(f"value: {size}, written to {output}")
        return
    text, cut = value_excerpt(record.value, max_bytes)
    typer.echo(f"value ({size}):")
    typer.echo(text)
    if cut:
        typer.echo(f"… cut at {max_bytes} characters: --output FILE writes the whole value")


def _excerpt_line(raw: bytes | None, max_bytes: int) -> str:
    if raw is None:
        return "(none)"
    text = printable(raw[:max_bytes].decode(errors="backslashreplace"))
    return text if len(raw) <= max_bytes else f"{text}… ({len(raw)} bytes)"


@app.command()
def replay(
    dlq_topic: Annotated[str | None, typer.Argument(metavar="DLQ_TOPIC")] = None,
    partition: Annotated[int | None, typer.Argument(min=0, metavar="PARTITION")] = None,
    offsets: Annotated[list[int] | None, typer.Argument(metavar="OFFSET...")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every whole dead letter (truncated ones are skipped).")
    ] = False,
    topic: TopicOption = None,
    service: ServiceOption = None,
) -> None:
    """Put dead letters back on their original topic (each original once); the consumers
    apply each event at most once. Truncated copies are refused."""
    positional = [dlq_topic, partition, offsets or None]
    if (every and any(p is not None for p in positional)) or (
        not every and (None in positional or topic or service)
    ):
        raise _fail(
            "give DLQ_TOPIC PARTITION OFFSET... (as `hotline dlq list` prints them), or --all "
            "(with --topic/--service to narrow it)",
            USAGE,
        )
    settings = stack_settings()
    if every:
        replays, skipped = _replays_of_all(settings, topic=topic, service=service)
        for reason in skipped:
            typer.echo(f"skipped: {reason}", err=True)
        if not replays:
            raise _fail("nothing to replay")
    else:
        assert dlq_topic is not None
        assert partition is not None
        assert offsets
        wanted = [Coordinates(dlq_topic, partition, offset) for offset in offsets]
        replays = _replays_of(settings, wanted)
    written = _run(settings, lambda: republish(settings, replays))
    for done, at in zip(replays, written, strict=True):
        record = done.source
        typer.echo(
            f"replayed {record.at} -> {at} "
            f"({_short(record.text('ce_type') or '-', _FIELD_CHARS)} "
            f"{_short(record.text('ce_id') or '-', _FIELD_CHARS)})"
        )


def _replays_of(settings: Settings, wanted: Sequence[Coordinates]) -> list[Replay]:
    """The replays of the letters at `wanted`; refuses all (exit 1) if one cannot be."""

    async def fetch() -> list[DeadLetterRecord | NotFound]:
        found: list[DeadLetterRecord | NotFound] = []
        async with reader(settings) as consumer:
            for at in wanted:
                try:
                    found.append(await read_one(consumer, at))
                except NotFound as exc:
                    found.append(exc)
        return found

    replays: dict[Coordinates, Replay] = {}
    problems = []
    for item in _run(settings, fetch):
        try:
            if isinstance(item, NotFound):
                raise item
            replay = replay_of(item)
        except (NotFound, NotReplayable) as exc:
            problems.append(str(exc))
            continue
        original = item.original
        assert original is not None  # replay_of refuses a letter without one
        replays.setdefault(original, replay)
    if problems:
        for problem in problems:
            typer.echo(f"refused: {problem}", err=True)
        raise _fail("nothing replayed")
    return list(replays.values())


def _replays_of_all(
    settings: Settings, *, topic: str | None, service: str | None
) -> tuple[list[Replay], list[str]]:
    """A replay of each original with a whole copy, and why the others are skipped."""
    _, records = _run(
        settings, lambda: _letters(settings, topic=topic, service=service, values=True)
    )
    replays, skipped = [], []
    for letter in group_by_original(records):
        whole = letter.whole_copy()
        try:
            replays.append(replay_of(whole or letter.first))
        except NotReplayable as exc:
            skipped.append(str(exc))
    return replays, skipped
