"""The API edge's input types, cursors, and the range of times an event may carry: each
input that once passed validation and then failed as a 500 is refused, with a clear message,
and every value that was valid before stays valid."""

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, Field, ValidationError

from shared.envelope import PoisonMessage, decode, encode
from shared.events import TicketSubmitted
from shared.inputs import EventTime, Label, PathId, QueryTime, SafeText
from shared.pagination import InvalidCursor, decode_cursor, encode_cursor


class Body(BaseModel):
    text: SafeText = Field(max_length=4000)
    label: Label | None = None
    at: EventTime | None = None
    since: QueryTime | None = None
    id: PathId | None = None


def refusal(**fields):
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"text": "ok", **fields})
    [error] = caught.value.errors()
    return error


@pytest.mark.parametrize("text", ["a\x00b", "\x00"])
def test_nul_in_text_is_refused_saying_so(text):
    error = refusal(text=text)
    assert error["loc"] == ("text",)
    assert "NUL" in error["msg"]


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "tail\udc00"])
def test_an_unpaired_surrogate_is_refused_saying_so(text):
    error = refusal(text=text)
    assert "surrogate" in error["msg"]


@pytest.mark.parametrize("text", ["医保卡丢了怎么补办？\n第二行\t", "😀 \u0085 \u2028", " "])
def test_other_text_passes_unchanged(text):
    assert Body.model_validate({"text": text}).text == text


@pytest.mark.parametrize(
    ("at", "kind"),
    [
        ("0001-01-01T00:00:00Z", "time_too_early"),
        ("0001-01-01T00:01:00Z", "time_too_early"),
        ("0001-01-01T00:00:00+23:59", "time_out_of_range"),
        ("9999-12-31T23:59:59-23:59", "time_out_of_range"),
        ("1999-12-31T23:59:59Z", "time_too_early"),
    ],
)
def test_an_event_time_before_2000_or_out_of_range_is_refused(at, kind):
    assert refusal(at=at)["type"] == kind


def test_an_event_time_may_run_five_minutes_ahead_and_no_more():
    now = datetime.now(UTC)
    assert Body.model_validate({"text": "x", "at": now + timedelta(minutes=4)}).at is not None
    assert refusal(at=(now + timedelta(minutes=10)).isoformat())["type"] == "time_in_future"
    assert refusal(at="2026-01-01T08:00:00")["type"] == "timezone_aware"


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "2100-01-01T00:00:00Z",
        "1999-01-01T00:00Z",
    ],
)
def test_a_query_time_outside_2000_to_2100_is_refused(since):
    assert refusal(since=since)["loc"] == ("since",)


def test_query_times_at_the_edges_of_the_range_pass():
    for since in ("2000-01-01T00:00:00Z", "2099-12-31T23:59:59+08:00"):
        assert Body.model_validate({"text": "x", "since": since}).since is not None


@pytest.mark.parametrize("value", ["a\x00", "tab\there", "x\x7f", "", "x" * 65])
def test_a_path_id_with_a_control_character_or_out_of_length_is_refused(value):
    assert refusal(id=value)["loc"] == ("id",)


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.UUID(int=0x1234_5678_9ABC_4DEF_8123_4567_89AB_CDEF)),
        "t-1",
        "ticket-9",
        "0123456789abcdef",
        "工单-1",
    ],
)
def test_every_id_the_services_make_or_hear_of_is_a_valid_path_id(value):
    assert Body.model_validate({"text": "x", "id": value}).id == value


def test_a_label_is_bounded_like_the_names_stored():
    assert refusal(label="长" * 65)["type"] == "string_too_long"
    assert refusal(label="")["type"] == "string_too_short"
    assert refusal(label="沈\x00阳")["type"] == "text_nul"


def test_the_openapi_document_says_what_the_types_refuse():
    schema = Body.model_json_schema()["properties"]
    assert schema["text"]["pattern"] == "^[^\\u0000]*$"
    path_id = schema["id"]["anyOf"][0]
    assert path_id["maxLength"] == 64
    assert path_id["pattern"] == "^[^\\u0000-\\u001f\\u007f/]+$"


def _cursor(raw) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def test_a_cursor_decodes_to_the_position_it_was_made_for():
    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "t-1")) == (at, "t-1")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        _cursor({"at": "0001-01-01T00:00:00+23:59", "id": "t-1"}),
        _cursor({"at": "9999-12-31T23:59:59-23:59", "id": "t-1"}),
        _cursor({"at": "2026-01-01T00:00:00", "id": "t-1"}),
        _cursor({"at": "2026-01-01T00:00:00Z", "id": "t\x00"}),
        _cursor({"at": "2026-01-01T00:00:00Z", "id": 7}),
        _cursor({"at": "2026-01-01T00:00:00Z", "id": "x" * 65}),
        _cursor(["2026-01-01T00:00:00Z", "t-1"]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_an_absurd_cursor_is_refused_naming_the_cursor(cursor):
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor)
    assert caught.value.field == "query.cursor"
    assert caught.value.status_code == 422


def _submitted_record(submitted_at: str):
    data = TicketSubmitted(
        ticket_id="t-1",
        city="沈阳",
        channel="phone",
        scenario="供暖",
        category="complaint",
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
        call={"answered": True, "wait_seconds": 3, "resolved_at_first_contact": False},
    ).model_dump(mode="json")
    data["submitted_at"] = submitted_at
    return encode(
        event_id="e-1",
        ce_type=TicketSubmitted.ce_type,
        source="/test",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        key="t-1",
        data=data,
    )


@pytest.mark.parametrize(
    "submitted_at",
    [
        "0001-01-01T00:01:00Z",
        "9999-12-31T23:59:59-23:59",
        "1969-12-31T23:59:59Z",
        "3000-01-01T00:00Z",
    ],
)
def test_an_event_with_an_absurd_time_is_poison_for_the_dead_letter_topic(submitted_at):
    record = _submitted_record(submitted_at)
    with pytest.raises(PoisonMessage) as caught:
        decode(record.headers, record.key, record.value)
    assert "submitted_at" in caught.value.reason


@pytest.mark.parametrize("submitted_at", ["1970-01-01T00:00:00Z", "2999-12-31T23:59:59Z"])
def test_an_event_time_within_the_lenient_years_is_accepted(submitted_at):
    record = _submitted_record(submitted_at)
    assert decode(record.headers, record.key, record.value).event is not None


def test_an_event_with_a_nan_wait_is_poison():
    record = _submitted_record("2026-01-01T00:00:00Z")
    value = re.sub(rb'"wait_seconds": ?3\.0', b'"wait_seconds": NaN', record.value)
    assert value != record.value
    with pytest.raises(PoisonMessage):
        decode(record.headers, record.key, value)
