"""Refilling a fresh embedded broker from the services' outboxes.

The embedded broker (tansu) keeps records in memory only: when it dies, is recycled, or the
whole stack is killed, every record it held is gone, including events some consumer had not
read yet (their outbox rows are already marked published). So each time the stack starts a
broker, it first puts back into the outboxes what the old broker may still have owed a
consumer; the relays publish those rows again in their order, and the consumers skip what
they had already applied (they record every event id they apply).

What "may still owe" means is kept in a checkpoint file per data folder: for each service
that publishes, a database time at or before which everything it published had been read
and committed by every consumer of its topic. The stack takes a checkpoint now and then
while it runs (whenever consumers are caught up) and when it stops; a broker that dies
abruptly leaves the last one, so at worst a little more than needed is re-sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer

from shared.db import make_engine
from shared.kafka import connection_options
from shared.names import CONSUMES, PUBLISHERS, ServiceName
from shared.offsets import end_offsets, topic_partitions
from shared.outbox import requeue_published
from shared.settings import Settings

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "broker-checkpoint.json"


def checkpoint_path(data_dir: Path) -> Path:
    """Where the stack of `data_dir` keeps its checkpoint."""
    return data_dir / CHECKPOINT_FILE


def load_checkpoint(path: Path) -> dict[ServiceName, datetime]:
    """The checkpoint, or nothing (re-send everything kept) if it is missing or unreadable."""
    try:
        raw = json.loads(path.read_text())
        return {name: datetime.fromisoformat(raw[name]) for name in PUBLISHERS if name in raw}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if path.exists():
            log.warning("broker checkpoint unreadable; re-sending all kept events: %r", exc)
        return {}


def save_checkpoint(path: Path, checkpoint: Mapping[ServiceName, datetime]) -> None:
    """Replace the checkpoint in one rename, so a kill never leaves half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        json.dumps({name: at.isoformat() for name, at in sorted(checkpoint.items())}, indent=1)
    )
    temporary.replace(path)


async def database_now(settings: Settings) -> datetime:
    """The database's clock: outbox rows are stamped with it."""
    engine = make_engine(settings.database_url, "public", pool_size=1)
    try:
        async with engine.connect() as connection:
            now: datetime = (await connection.execute(sa.select(sa.func.now()))).scalar_one()
            return now
    finally:
        await engine.dispose()


async def read_through(settings: Settings) -> dict[ServiceName, datetime]:
    """For each publisher whose topic every consumer group has committed to its end: the
    database time taken before the offsets were read (so whatever was published by then is
    below the end offsets, hence read). Publishers with a consumer behind are left out."""
    before = await database_now(settings)
    probe = AIOKafkaConsumer(**connection_options(settings), enable_auto_commit=False)
    await probe.start()
    try:
        found = await topic_partitions(probe, [settings.topic(name) for name in PUBLISHERS])
        partitions = {name: found.get(settings.topic(name), []) for name in PUBLISHERS}
        wanted = [tp for tps in partitions.values() for tp in tps]
        ends = await end_offsets(probe, wanted) if wanted else {}
    finally:
        await probe.stop()
    behind: set[ServiceName] = set()
    for consumer_name, upstream in CONSUMES.items():
        if not upstream:
            continue
        group = AIOKafkaConsumer(
            **connection_options(settings),
            group_id=settings.group_of(consumer_name),
            enable_auto_commit=False,
        )
        await group.start()
        try:
            for publisher in upstream:
                for tp in partitions[publisher]:
                    if ends[tp] > 0 and (await group.committed(tp) or 0) < ends[tp]:
                        behind.add(publisher)
                        break
        finally:
            await group.stop()
    return {name: before for name in PUBLISHERS if name not in behind and partitions[name]}


async def advance_checkpoint(settings: Settings, path: Path) -> dict[ServiceName, datetime]:
    """Move the checkpoint forward for every topic all its consumers have read to the end."""
    checkpoint = load_checkpoint(path)
    checkpoint.update(await read_through(settings))
    save_checkpoint(path, checkpoint)
    return checkpoint


async def refill(settings: Settings, path: Path) -> dict[ServiceName, int]:
    """Put back into each outbox the rows published after its checkpoint (all kept rows when
    there is none); returns how many per service. Run while no relay publishes to the new
    broker yet, so the rows go out again in their first order."""
    checkpoint = load_checkpoint(path)
    counts: dict[ServiceName, int] = {}
    for name in PUBLISHERS:
        counts[name] = await requeue_published(settings, name, published_after=checkpoint.get(name))
    return counts
