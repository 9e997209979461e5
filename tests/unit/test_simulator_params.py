"""Each default of the simulator is the report's own figure, found in the report's text.

The numbers are written once, in `hotline/simulator/params.py`; these tests read the seed
reports and look for each default there, so a typo in either place shows.
"""

import json
import os
import re
from pathlib import Path

import pytest

from hotline.simulator.params import (
    REPORT_2018,
    REPORT_2025,
    SimulatorParams,
    Timing,
    load_params,
    parameter_rows,
    source_of,
    with_overrides,
)

SEEDS = Path(
    os.environ.get("HOTLINE_SEEDS_DIR", Path(__file__).resolve().parents[2] / "docs" / "reports")
)
PARAMS = SimulatorParams()


@pytest.fixture(scope="module")
def reports():
    texts = {}
    for name in (REPORT_2025, REPORT_2018):
        texts[name] = (SEEDS / name).read_text(encoding="utf-8")
    return texts


def as_written(value: float, unit: str) -> str:
    """A default as the report writes it: 0.9659 -> '96.59%', 13.69 s -> '13.69秒'."""
    if unit == "%":
        return f"{value * 100:.2f}%"
    return f"{value:g}{unit}"


FIGURES = [
    # (field, how the report writes its unit)
    ("connection_rate", "%"),
    ("mean_wait_seconds", "秒"),
    ("transfer_failure_rate", "%"),
    ("three_way_failure_rate", "%"),
    ("phone_work_order_unanswered_rate", "%"),
    ("definite_reply_rate", "%"),
    ("online_reply_within_deadline_rate", "%"),
    ("online_first_contact_resolution_rate", "%"),
    ("due_working_days", "个工作日"),
    ("satisfied_weight", "%"),
    ("basically_satisfied_weight", "%"),
    ("unsatisfied_weight", "%"),
]


@pytest.mark.parametrize(("name", "unit"), FIGURES)
def test_a_calibrated_default_is_written_in_the_report_as_quoted(reports, name, unit):
    source = source_of(name)
    assert source is not None, name
    assert source.kind in ("figure", "proxy"), name
    assert source.quote, name
    written = as_written(getattr(PARAMS, name), unit)
    assert written in source.quote, f"{name}: {written} not in 「{source.quote}」"
    assert source.quote in reports[source.document], f"{name}: quote not in {source.document}"


def test_the_headline_figures_are_the_reports(reports):
    text = reports[REPORT_2025]
    for figure in ("96.59%", "13.69秒", "22.16%", "4.76%", "28.11%", "78.31%"):
        assert figure in text
    assert as_written(PARAMS.connection_rate, "%") == "96.59%"
    assert as_written(PARAMS.mean_wait_seconds, "秒") == "13.69秒"
    assert as_written(PARAMS.transfer_failure_rate, "%") == "22.16%"
    assert as_written(PARAMS.three_way_failure_rate, "%") == "4.76%"
    assert as_written(PARAMS.phone_work_order_unanswered_rate, "%") == "28.11%"
    assert as_written(PARAMS.definite_reply_rate, "%") == "78.31%"


def test_first_contact_resolution_spans_the_reports_range(reports):
    text = reports[REPORT_2025]
    quoted = [s for s in PARAMS.scenarios if s.quote]
    assert {as_written(s.first_contact_resolution_rate, "%") for s in quoted} == {
        "80.06%",
        "41.16%",
    }
    for scenario in quoted:
        assert scenario.quote in text
        assert scenario.name in scenario.quote
        assert as_written(scenario.first_contact_resolution_rate, "%") in scenario.quote
    rates = [s.first_contact_resolution_rate for s in PARAMS.scenarios]
    assert min(rates) == 0.4116
    assert max(rates) == 0.8006
    for scenario in PARAMS.scenarios:
        assert scenario.name in text, scenario.name
        assert scenario.department in text, scenario.department
        if not scenario.quote:
            assert scenario.source.startswith("assumption"), scenario.name


def test_derived_defaults_are_computed_from_the_reports_numbers(reports):
    text = reports[REPORT_2025]
    assert "296个城市可以提交诉求" in text
    assert "350个地级及以上城市" in text
    assert PARAMS.online_submission_success_rate == 296 / 350
    survey = reports[REPORT_2018]
    assert re.search(r"84%\s*市的政务服务电话热线未提供\s*满意度评价或跟踪回访", survey)
    assert PARAMS.callback_rate == pytest.approx(0.16)
    for name in ("online_submission_success_rate", "callback_rate"):
        source = source_of(name)
        assert source is not None
        assert source.kind == "derived"
        assert source.quote in reports[source.document]


def test_the_default_cities_are_named_in_the_report(reports):
    text = reports[REPORT_2025]
    assert len(PARAMS.cities) == len(set(PARAMS.cities)) >= 20
    for city in PARAMS.cities:
        assert city in text, city


def test_every_parameter_says_where_it_comes_from():
    for name in SimulatorParams.model_fields:
        if name == "timing":
            continue
        source = source_of(name)
        assert source is not None, name
        assert source.note, name
        if source.kind in ("figure", "derived", "proxy"):
            assert source.document in (REPORT_2025, REPORT_2018), name
    for name in Timing.model_fields:
        source = source_of(name, Timing)
        assert source is not None, name
        assert source.kind == "assumption", name
    rows = parameter_rows(PARAMS)
    assert all(source for _, _, source in rows)
    assert len(rows) == len(SimulatorParams.model_fields) - 2 + len(PARAMS.scenarios) + len(
        Timing.model_fields
    )


def test_a_params_file_overrides_only_what_it_names(tmp_path):
    toml_file = tmp_path / "params.toml"
    toml_file.write_text(
        'connection_rate = 0.5\ncities = ["沈阳"]\n[timing]\nlate_reply_days = [1.0, 2.0]\n',
        encoding="utf-8",
    )
    params = load_params(toml_file)
    assert params.connection_rate == 0.5
    assert params.cities == ["沈阳"]
    assert params.timing.late_reply_days == (1.0, 2.0)
    assert params.mean_wait_seconds == PARAMS.mean_wait_seconds
    assert params.timing.callback_after_hours == PARAMS.timing.callback_after_hours

    json_file = tmp_path / "params.json"
    json_file.write_text(json.dumps({"definite_reply_rate": 0.9}), encoding="utf-8")
    assert load_params(json_file).definite_reply_rate == 0.9


def test_a_misspelt_or_impossible_parameter_is_refused(tmp_path):
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"conection_rate": 0.5}), encoding="utf-8")
    with pytest.raises(ValueError, match="conection_rate"):
        load_params(typo)
    with pytest.raises(ValueError, match="connection_rate"):
        with_overrides(PARAMS, connection_rate=1.5)
    with pytest.raises(ValueError, match="transfer_share"):
        with_overrides(PARAMS, transfer_share=0.7, three_way_share=0.5)


def test_cli_overrides_replace_only_what_is_given():
    params = with_overrides(PARAMS, connection_rate=0.9, mean_wait_seconds=None)
    assert params.connection_rate == 0.9
    assert params.mean_wait_seconds == PARAMS.mean_wait_seconds
    assert with_overrides(PARAMS) is PARAMS
