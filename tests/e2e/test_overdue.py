"""Overdue work orders (督办) per department and city on metrics: how many, and how many
working days late, from events published straight to the topics; the same in Prometheus
series; who may ask and what a bad question gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.events import WorkOrderOverdue
from shared.workdays import WorkCalendar, local_day
from tests.e2e.test_ticket_timeline import published, reply, submitted, work_order
from tests.support import eventually, problem_fields, problem_of, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

NOW = datetime.now(UTC).replace(microsecond=0)


def late_days(due: datetime, calendar: WorkCalendar) -> int:
    """Working days wholly between the deadline and today (Asia/Shanghai), counted by hand."""
    day = local_day(due - timedelta(microseconds=1)) + timedelta(days=1)
    today = local_day(datetime.now(UTC))
    count = 0
    while day < today:
        count += calendar.is_working_day(day)
        day += timedelta(days=1)
    return count


def order(ticket_id, work_order_id, department, due):
    created = work_order(ticket_id, work_order_id, due - timedelta(days=7), due)
    return created.model_copy(update={"department": department})


async def test_overdue_work_orders_per_department_and_city_with_working_days_late(settings):
    housing, social = "住建局", "人社局"
    dues = {
        "OD-1": NOW - timedelta(days=12),  # 住建局, 沈阳
        "OD-2": NOW - timedelta(days=3),  # 住建局, 沈阳
        "OD-3": NOW - timedelta(days=20),  # 人社局, ticket unknown (no city yet)
        "OD-4": NOW - timedelta(days=9),  # 住建局, replied: not overdue
        "OD-5": NOW + timedelta(days=2),  # 住建局, not due yet
    }
    events = [
        ("intake", submitted("ODT")),
        ("dispatch", order("ODT", "OD-1", housing, dues["OD-1"])),
        ("dispatch", order("ODT", "OD-2", housing, dues["OD-2"])),
        ("dispatch", order("ODX", "OD-3", social, dues["OD-3"])),
        ("dispatch", order("ODT", "OD-4", housing, dues["OD-4"])),
        ("dispatch", reply("ODT", "OD-4", "OD-4R", dues["OD-4"] + timedelta(days=1))),
        ("dispatch", order("ODT", "OD-5", housing, dues["OD-5"])),
        (
            "dispatch",
            WorkOrderOverdue(
                ticket_id="ODT",
                work_order_id="OD-1",
                department=housing,
                due_at=dues["OD-1"],
                detected_at=dues["OD-1"] + timedelta(minutes=1),
            ),
        ),
    ]
    await published(settings, events)
    settings = settings.model_copy(update={"rates_refresh_seconds": 0.2})
    calendar = WorkCalendar.load(settings.holiday_path())
    late = {name: late_days(due, calendar) for name, due in dues.items()}
    async with running_service("metrics", settings) as metrics:
        await metrics.consumed()
        by_department = (await metrics.http.get("/audit/overdue/by/department")).json()
        by_city = (await metrics.http.get("/audit/overdue/by/city")).json()
        only_housing = (
            await metrics.http.get("/audit/overdue/by/city", params={"department": housing})
        ).json()
        expected_series = {
            (housing, "沈阳"): (2.0, float(late["OD-1"])),
            (social, ""): (1.0, float(late["OD-3"])),
        }

        async def series_as_expected() -> bool:
            return await _overdue_series(metrics) == expected_series

        await eventually(series_as_expected, message="overdue series refreshed")

        anonymous = await metrics.as_role(None)
        problem_of(await anonymous.get("/audit/overdue/by/department"), 401)
        for role in ("operator", "evaluator", "callback", "admin"):
            client = await metrics.as_role(role)
            problem_of(await client.get("/audit/overdue/by/department"), 403)
        problem_of(await (await metrics.department(housing)).get("/audit/overdue/by/city"), 403)
        for path, params, field in [
            ("/audit/overdue/by/ticket", {}, "path.dimension"),
            ("/audit/overdue/by/city", {"city": "沈\x00阳"}, "query.city"),
            ("/audit/overdue/by/city", {"department": "局" * 65}, "query.department"),
            ("/audit/overdue/by/city", {"department": ""}, "query.department"),
        ]:
            response = await metrics.http.get(path, params=params)
            assert response.status_code == 422, response.text
            assert problem_fields(response) == {field}

    assert by_department == {
        "by": "department",
        "total": 3,
        "groups": [
            {
                "key": social,
                "overdue": 1,
                "working_days_late_total": late["OD-3"],
                "working_days_late_max": late["OD-3"],
            },
            {
                "key": housing,
                "overdue": 2,
                "working_days_late_total": late["OD-1"] + late["OD-2"],
                "working_days_late_max": late["OD-1"],
            },
        ],
    }
    assert late["OD-1"] >= 6  # 12 calendar days: whatever the holidays, some working days
    assert [(g["key"], g["overdue"]) for g in by_city["groups"]] == [("沈阳", 2), (None, 1)]
    assert [(g["key"], g["overdue"]) for g in only_housing["groups"]] == [("沈阳", 2)]


async def _overdue_series(metrics) -> dict:
    text = (await metrics.http.get("/metrics")).text
    found: dict = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("hotline_overdue_work_orders", "hotline_overdue_working_days_max"):
            continue
        for sample in family.samples:
            key = (sample.labels["department"], sample.labels["city"])
            count, latest = found.get(key, (None, None))
            if family.name == "hotline_overdue_work_orders":
                count = sample.value
            else:
                latest = sample.value
            found[key] = (count, latest)
    return found
