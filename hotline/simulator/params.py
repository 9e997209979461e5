"""Every figure the simulator draws from, its default, and where that default comes from.

The defaults are calibrated to the 2025 evaluation of 350 cities' 12345 hotlines
(`seeds/004_e5af5c4128db53a9.txt`, section numbers as in the report: 二(一) is "核心发现,
(一)"). Each field's `Source` says what kind of default it is:

- `figure`: the report's own number for this very thing (the quote holds it);
- `derived`: computed from the report's numbers (the note says how);
- `proxy`: the report's number for a neighbouring thing, used for lack of a direct one;
- `assumption`: neither report gives a figure; a plausible value, to be overridden.

Every field can be overridden from a JSON or TOML file (`--params FILE`, the field names
below as keys; a partial file keeps the other defaults) and the common ones by CLI options.
`hotline simulate --show-params` prints this table.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import Category

REPORT_2025 = "004_e5af5c4128db53a9.txt"
"""The 2025 evaluation of 350 cities' hotlines (零点有数 / D3方评估平台)."""
REPORT_2018 = "000_690f78fdfb5e3294.txt"
"""The 2018 survey of provincial and city hotlines (赛迪评估)."""

SourceKind = Literal["figure", "derived", "proxy", "assumption"]


@dataclass(frozen=True)
class Source:
    """Where a default comes from: which report, which section, the words that hold it."""

    kind: SourceKind
    note: str
    document: str | None = None
    section: str | None = None
    quote: str | None = None
    """Verbatim text of `document` containing the figure (tests look it up there)."""

    def describe(self) -> str:
        """One line for tables and field descriptions."""
        if self.document is None:
            return f"{self.kind}: {self.note}"
        year = "2025" if self.document == REPORT_2025 else "2018"
        quote = f" 「{self.quote}」" if self.quote else ""
        return f"{self.kind}, {year} report §{self.section}{quote}: {self.note}"


def _figure(section: str, quote: str, note: str, document: str = REPORT_2025) -> Source:
    return Source("figure", note, document, section, quote)


def _assumption(note: str) -> Source:
    return Source("assumption", note)


def calibrated(default: Any, source: Source, **constraints: Any) -> Any:
    """A pydantic Field whose description and schema carry its `Source`."""
    return Field(
        default,
        description=source.describe(),
        json_schema_extra={"source": asdict(source)},
        **constraints,
    )


def probability(default: float, source: Source) -> Any:
    """A calibrated probability (0 to 1)."""
    return calibrated(default, source, ge=0.0, le=1.0)


class Frozen(BaseModel):
    """Parameters are values: unknown keys in a params file are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioParams(Frozen):
    """One evaluation scenario (测评场景): the department it belongs to and how often the
    operator solves it on the spot (首呼解答)."""

    name: str = Field(min_length=1, max_length=64)
    department: str = Field(min_length=1, max_length=64)
    first_contact_resolution_rate: float = Field(ge=0.0, le=1.0)
    weight: float = Field(default=1.0, gt=0.0, description="Relative share of tickets.")
    content: str = Field(min_length=1, max_length=4000, description="What the evaluator asks.")
    source: str = Field(description="Where the resolution rate comes from.")
    quote: str | None = Field(default=None, description="Verbatim report text holding it.")


DEFAULT_SCENARIOS: tuple[ScenarioParams, ...] = (
    ScenarioParams(
        name="育儿补贴领取",
        department="卫健",
        first_contact_resolution_rate=0.8006,
        content="咨询育儿补贴怎么申请、需要哪些材料、多久能到账",
        source="figure, 2025 report §二(三): the highest first-contact resolution",
        quote="育儿补贴领取场景的首呼解答率相对较高,为80.06%",
    ),
    ScenarioParams(
        name="小微企业集群注册政策咨询",
        department="市场监管",
        first_contact_resolution_rate=0.4116,
        content="咨询小微企业集群注册的条件和办理流程",
        source="figure, 2025 report §二(三): the lowest first-contact resolution",
        quote="小微企业集群注册政策咨询场景的首呼解答率相对较低,为41.16%",
    ),
    ScenarioParams(
        name="退休一件事",
        department="人社",
        first_contact_resolution_rate=0.62,
        content="咨询退休一件事联办需要准备什么、在哪里办理",
        source="assumption: the report gives only its rise (+5.48 points), not its level; "
        "a value between the report's lowest and highest",
    ),
    ScenarioParams(
        name="税收优惠政策",
        department="税务",
        first_contact_resolution_rate=0.58,
        content="咨询小规模纳税人能享受哪些税收优惠政策",
        source="assumption: the report gives only its rise (+16.39 points), not its level; "
        "a value between the report's lowest and highest",
    ),
)
"""The report's scenarios, each with the department (of the four the report names:
市场监管、税务、卫健、人社) that would answer it."""

DEFAULT_CITIES: tuple[str, ...] = (
    "北京",
    "上海",
    "广州",
    "沈阳",
    "驻马店",
    "重庆",
    "杭州",
    "银川",
    "东莞",
    "青岛",
    "宁波",
    "苏州",
    "汕头",
    "山南",
    "哈尔滨",
    "乌鲁木齐",
    "威海",
    "那曲",
    "张家界",
    "珠海",
    "昆明",
    "南通",
    "泸州",
    "濮阳",
)
"""The cities the 2025 report names (for progress, standout indicators or quick answers)."""

Range = tuple[float, float]


class Timing(Frozen):
    """When things happen after the submission. No report measures these: assumptions that
    put events in a realistic order. Each is a (low, high) range drawn uniformly."""

    transfer_after_answer_seconds: Range = calibrated(
        (20.0, 180.0), _assumption("a transfer is tried during the call, after the answer")
    )
    work_order_after_submission_minutes: Range = calibrated(
        (2.0, 120.0), _assumption("the operator files the work order soon after the call")
    )
    on_time_reply_fraction: Range = calibrated(
        (0.02, 1.0),
        _assumption("an on-time reply comes this fraction of the way from creation to due_at"),
    )
    late_reply_days: Range = calibrated(
        (0.05, 10.0), _assumption("a late reply comes this long after due_at")
    )
    callback_after_hours: Range = calibrated(
        (1.0, 72.0),
        _assumption("a callback follows the resolution (or the department's reply)"),
    )
    callback_retry_after_hours: Range = calibrated(
        (4.0, 48.0), _assumption("a second attempt follows an unreached callback")
    )
    live_step_seconds: Range = calibrated(
        (1.0, 5.0),
        _assumption("in --live mode, real seconds between a ticket's steps"),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Timing:
        for name in type(self).model_fields:
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name}: need 0 <= low <= high, got ({low}, {high})")
        return self


class SimulatorParams(Frozen):
    """Every calibrated figure of the simulation (see the module docstring for the kinds)."""

    # --- Who contacts the hotline, where and how ------------------------------------------
    cities: list[str] = calibrated(
        list(DEFAULT_CITIES),
        Source(
            "figure",
            "the cities the report names; tickets are spread evenly over them",
            REPORT_2025,
            "一, 二(一)",
        ),
        min_length=1,
    )
    phone_share: float = probability(
        0.7,
        _assumption("the report tests both channels but gives no split of contacts"),
    )
    category_weights: dict[Category, float] = calibrated(
        {"consultation": 0.6, "help": 0.2, "complaint": 0.1, "report": 0.05, "suggestion": 0.05},
        _assumption("the report's scenarios are mostly policy questions (relative weights)"),
    )
    scenarios: list[ScenarioParams] = calibrated(
        list(DEFAULT_SCENARIOS),
        Source(
            "figure",
            "first-contact resolution by scenario, 41.16% to 80.06% (each scenario has its "
            "own source)",
            REPORT_2025,
            "二(三)",
        ),
        min_length=1,
    )

    # --- The call -------------------------------------------------------------------------
    connection_rate: float = probability(
        0.9659,
        _figure("二(一)", "平均接通率为96.59%", "phone calls answered"),
    )
    mean_wait_seconds: float = calibrated(
        13.69,
        _figure("二(一)", "平均接通时长为13.69秒", "mean time to answer an answered call"),
        gt=0.0,
    )
    wait_shape: float = calibrated(
        2.0,
        _assumption(
            "shape of the gamma distribution of waits (mean as above); 2 gives ~64% "
            "answered within 15 s"
        ),
        gt=0.0,
    )
    online_submission_success_rate: float = probability(
        296 / 350,
        Source(
            "derived",
            "296 of the 350 cities evaluated accept an online submission",
            REPORT_2025,
            "二(四)",
            "296个城市可以提交诉求",
        ),
    )
    online_first_contact_resolution_rate: float = probability(
        0.2239,
        Source(
            "proxy",
            "an online request solved at once: the share of cities whose online smart "
            "customer service fully answers the question",
            REPORT_2025,
            "二(五)",
            "仅22.39%的城市智能客服可完整解答咨询内容",
        ),
    )

    # --- What the operator does with an answered call not solved on the spot -------------
    transfer_share: float = probability(
        0.3, _assumption("unsolved answered calls the operator transfers (转接)")
    )
    three_way_share: float = probability(
        0.1, _assumption("unsolved answered calls the operator puts on a three-way call")
    )
    transfer_failure_rate: float = probability(
        0.2216,
        _figure("二(三)", "有22.16%未接通", "transfers to a department that did not connect"),
    )
    three_way_failure_rate: float = probability(
        0.0476,
        _figure("二(三)", "有4.76%未能接通", "three-way calls that did not connect"),
    )
    work_order_after_failed_connection_rate: float = probability(
        1.0,
        _assumption("a transfer or three-way call that did not connect becomes a work order"),
    )
    online_work_order_rate: float = probability(
        1.0, _assumption("an online request not solved at once becomes a work order")
    )

    # --- Work orders and the departments' replies ----------------------------------------
    due_working_days: int = calibrated(
        5,
        _figure("二(四)", "5个工作日内", "the reply deadline the report measures against"),
        ge=1,
        le=60,
    )
    phone_work_order_unanswered_rate: float = probability(
        0.2811,
        _figure("二(三)", "有28.11%未进行回复", "dispatched work orders never answered"),
    )
    phone_reply_on_time_rate: float = probability(
        0.9,
        _assumption("the report gives no deadline figure for phone work orders' replies"),
    )
    online_reply_within_deadline_rate: float = probability(
        0.9484,
        Source(
            "proxy",
            "online requests answered by the deadline (the report counts cities)",
            REPORT_2025,
            "二(四)",
            "94.84%的城市能够在5个工作日内对线上端提交诉求进行回复",
        ),
    )
    online_late_share_of_missed: float = probability(
        0.5,
        _assumption("of online requests not answered by the deadline, those answered late"),
    )
    definite_reply_rate: float = probability(
        0.7831,
        _figure(
            "二(四)",
            "78.31%的回复内容给到了明确具体的答案",
            "replies that give a definite answer (measured online; applied to all replies)",
        ),
    )
    partial_share_of_indefinite: float = probability(
        0.6, _assumption("of replies not definite, those partly useful (the rest: none)")
    )

    # --- Callbacks (回访) and satisfaction -------------------------------------------------
    callback_rate: float = probability(
        1 - 0.84,
        Source(
            "derived",
            "the 2025 report has no callback figure; 84% of city hotlines had no callback "
            "or satisfaction survey in 2018, so 16% of eligible tickets are called back",
            REPORT_2018,
            "四(二)4",
            "84%市的政务服务电话热线未提供",
        ),
    )
    callback_reached_rate: float = probability(0.8, _assumption("callbacks that reach the citizen"))
    callback_retry_rate: float = probability(
        0.5, _assumption("unreached callbacks followed by one more attempt")
    )
    satisfaction_declined_rate: float = probability(
        0.05, _assumption("reached citizens who decline to rate")
    )
    satisfied_weight: float = calibrated(
        0.4434,
        Source(
            "proxy",
            "no satisfaction figure in either report: answers follow the operators' moods; "
            "positive operators -> satisfied",
            REPORT_2025,
            "二(二)",
            "积极型话务员占比为44.34%",
        ),
        ge=0.0,
    )
    basically_satisfied_weight: float = calibrated(
        0.5258,
        Source(
            "proxy",
            "steady operators -> basically satisfied",
            REPORT_2025,
            "二(二)",
            "稳定型话务员占比为52.58%",
        ),
        ge=0.0,
    )
    unsatisfied_weight: float = calibrated(
        0.0308,
        Source(
            "proxy",
            "negative operators -> unsatisfied; each unsatisfied answer reopens its ticket "
            "(重办), so this weight's share of the three is the chance an answered callback "
            "reopens it (3.08% by default; reopen_rate checks it)",
            REPORT_2025,
            "二(二)",
            "消极型话务员占比为3.08%",
        ),
        ge=0.0,
    )

    timing: Timing = Field(default_factory=Timing, description="When things happen.")

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorParams:
        if self.transfer_share + self.three_way_share > 1:
            raise ValueError("transfer_share + three_way_share must not exceed 1")
        if not any(w > 0 for w in self.category_weights.values()):
            raise ValueError("category_weights: at least one weight must be positive")
        satisfaction = (self.satisfied_weight, self.basically_satisfied_weight)
        if sum(satisfaction) + self.unsatisfied_weight <= 0:
            raise ValueError("satisfaction weights: at least one must be positive")
        if any(not city.strip() for city in self.cities):
            raise ValueError("cities: names must not be empty")
        return self

    def departments(self) -> frozenset[str]:
        """The departments the stories involve: a run needs a key for each one's desk."""
        return frozenset(scenario.department for scenario in self.scenarios)


def source_of(name: str, model: type[BaseModel] = SimulatorParams) -> Source | None:
    """The `Source` of a field, or None for a field without one (e.g. `timing`)."""
    extra = model.model_fields[name].json_schema_extra
    if not isinstance(extra, dict) or not isinstance(extra.get("source"), dict):
        return None
    return Source(**extra["source"])  # type: ignore[arg-type]


def load_params(path: Path) -> SimulatorParams:
    """Defaults overridden by a JSON (`.json`) or TOML (any other suffix) file."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    return SimulatorParams.model_validate(data)


def with_overrides(params: SimulatorParams, **overrides: Any) -> SimulatorParams:
    """`params` with the given fields replaced (None means keep), validated again."""
    chosen = {name: value for name, value in overrides.items() if value is not None}
    if not chosen:
        return params
    return SimulatorParams.model_validate({**params.model_dump(), **chosen})


def parameter_rows(params: SimulatorParams) -> list[tuple[str, str, str]]:
    """(name, value, source) for every parameter, scenarios and timing included."""
    rows: list[tuple[str, str, str]] = []
    for name in SimulatorParams.model_fields:
        value = getattr(params, name)
        if name == "scenarios":
            for scenario in params.scenarios:
                rows.append(
                    (
                        f"scenarios[{scenario.name}].first_contact_resolution_rate",
                        f"{scenario.first_contact_resolution_rate:g} ({scenario.department})",
                        scenario.source + (f" 「{scenario.quote}」" if scenario.quote else ""),
                    )
                )
            continue
        if name == "timing":
            for timing_name in Timing.model_fields:
                source = source_of(timing_name, Timing)
                rows.append(
                    (
                        f"timing.{timing_name}",
                        str(getattr(params.timing, timing_name)),
                        source.describe() if source else "",
                    )
                )
            continue
        source = source_of(name)
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v:g}" for k, v in value.items())
        elif isinstance(value, list):
            shown = "、".join(value)
        else:
            shown = f"{value:.6g}"
        rows.append((name, shown, source.describe() if source else ""))
    return rows
