"""`hotline audit unanswered`: a readable table, and a clear failure when the API is away."""

from rich.console import Console
from typer.testing import CliRunner

from hotline.audit import unanswered_table
from hotline.cli import app
from hotline.embedded import free_port

PAGE = {
    "total": 3,
    "items": [
        {
            "work_order_id": "wo-1",
            "ticket_id": "t-1",
            "city": "沈阳",
            "department": "住建局",
            "created_at": "2026-03-02T01:00:00+00:00",
            "due_at": "2026-03-09T16:00:00+00:00",
            "overdue": True,
            "age_working_days": 12,
        },
        {
            "work_order_id": "wo-2",
            "ticket_id": "t-2",
            "city": None,
            "department": "人社局",
            "created_at": "2026-03-20T01:00:00+00:00",
            "due_at": "2026-03-27T16:00:00+00:00",
            "overdue": False,
            "age_working_days": 1,
        },
    ],
}


def test_the_table_shows_every_row_in_shanghai_time_and_how_many_are_left_out():
    console = Console(record=True, width=200)
    console.print(unanswered_table(PAGE))
    text = console.export_text()
    assert "wo-1" in text
    assert "wo-2" in text
    assert "2026-03-10 00:00" in text  # 16:00 UTC is midnight in Shanghai
    assert "(ticket not yet known)" in text
    assert "2 of 3 shown" in text
    assert text.index("wo-1") < text.index("wo-2")


def test_an_unreachable_api_is_a_clear_message_and_a_nonzero_exit():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["audit", "unanswered", "--url", url, "--overdue-only"])
    assert result.exit_code == 1
    assert f"cannot reach the metrics service at {url}" in result.output
