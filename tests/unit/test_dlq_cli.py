"""`hotline dlq`: what a dead letter looks like on a terminal, what a replay puts back, and
clear failures before any broker is involved."""

import json

import pytest
from typer.testing import CliRunner

from hotline.dlq import (
    Coordinates,
    DeadLetterRecord,
    NotReplayable,
    app,
    group_by_original,
    printable,
    replay_of,
    value_excerpt,
)
from hotline.embedded import free_port
from hotline.stack_env import stack_settings

ORIGINAL = (
    ("ce_id", b"e-1"),
    ("ce_type", b"hotline.ticket.submitted.v1"),
    ("ce_specversion", b"1.0"),
)


def letter(offset=0, *, original_offset=17, service=b"dispatch", truncated=False, value=b"{}"):
    headers = [
        *ORIGINAL,
        ("dlq_reason", b"invalid"),
        ("dlq_topic", b"intake.events"),
        ("dlq_partition", b"2"),
        ("dlq_offset", str(original_offset).encode()),
        ("dlq_service", service),
    ]
    if truncated:
        headers += [("dlq_truncated", b"true"), ("dlq_original_bytes", b"2097152")]
    return DeadLetterRecord(
        at=Coordinates("intake.events.dlq", 0, offset),
        key=b"t-1",
        value=value,
        headers=tuple(headers),
        size=len(value),
    )


def test_a_replay_is_the_original_record_without_the_dead_letter_headers():
    replay = replay_of(letter(5))
    assert replay.topic == "intake.events"
    assert (replay.key, replay.value) == (b"t-1", b"{}")
    assert replay.headers == [*ORIGINAL, ("dlq_replayed_from", b"intake.events.dlq/0/5")]


def test_a_truncated_copy_or_a_record_without_coordinates_is_not_replayable():
    with pytest.raises(NotReplayable, match=r"truncated copy of intake\.events/2/17"):
        replay_of(letter(truncated=True))
    stray = DeadLetterRecord(Coordinates("x.dlq", 0, 3), b"k", b"v", ORIGINAL, 1)
    with pytest.raises(NotReplayable, match="not a dead letter"):
        replay_of(stray)


def test_copies_of_one_original_by_several_services_or_retries_are_one_letter():
    copies = [
        letter(0, service=b"dispatch"),
        letter(1, service=b"metrics"),
        letter(2, service=b"dispatch"),  # written again after a retried batch
        letter(3, original_offset=18),
    ]
    letters = group_by_original(copies)
    assert [len(one.copies) for one in letters] == [3, 1]
    assert letters[0].services == ["dispatch", "metrics"]
    assert letters[0].first.at.offset == 0


def test_control_and_format_characters_never_reach_the_terminal():
    hostile = "ok\x1b[2J\x9b31m\u202egnp.exe\r\n沈阳"
    assert printable(hostile) == "ok\\x1b[2J\\x9b31m\\u202egnp.exe\\x0d\\x0a沈阳"
    assert printable("a\nb", newlines=True) == "a\nb"


def test_a_json_value_is_pretty_and_a_long_one_is_cut():
    text, cut = value_excerpt(json.dumps({"city": "沈阳", "n": 1}).encode(), 4096)
    assert text == '{\n  "city": "沈阳",\n  "n": 1\n}'
    assert not cut
    text, cut = value_excerpt(b"\xff" + b"x" * 10_000, 100)
    assert text.startswith("\\xffxxx")
    assert len(text) == 100
    assert cut


def test_the_broker_comes_from_the_environment_else_from_the_stack_env(tmp_path, monkeypatch):
    (tmp_path / "stack.env").write_text(
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092\nDATABASE_URL=postgresql://u@127.0.0.1:5433/h\n"
    )
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = stack_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.database_url == "postgresql+asyncpg://u@127.0.0.1:5433/h"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    assert stack_settings().kafka_bootstrap_servers == "broker:9092"


@pytest.mark.parametrize(
    "args",
    [
        ["replay"],
        ["replay", "intake.events.dlq", "0"],
        ["replay", "--all", "intake.events.dlq", "0", "1"],
        ["replay", "intake.events.dlq", "0", "1", "--service", "dispatch"],
        ["show", "intake.events.dlq", "zero", "1"],
    ],
)
def test_arguments_that_do_not_fit_together_exit_2_before_any_broker_is_asked(args, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output


def test_an_unreachable_broker_is_said_plainly_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 2
    assert "cannot read from the broker at 127.0.0.1:" in result.output
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.output
    assert "Traceback" not in result.output
