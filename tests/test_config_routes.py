"""[[route]], [[retention]], the storage limits and [routing]: parsed into settings, and one
line naming the rule and the key for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from duckpacs import config
from duckpacs.errors import ConfigError

PEERS = """
[peers.pacs]
ae_title = "CENTRAL"
host = "10.0.0.2"
port = 104
[peers.tele]
ae_title = "TELERAD"
host = "tele.example.org"
port = 11112
"""


def load(tmp_path: Path, text: str) -> config.Settings:
    (tmp_path / "duckpacs.toml").write_text(text, encoding="utf-8")
    return config.load(env={}, cwd=tmp_path)


def test_routes_and_retention_are_parsed(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
[[route]]
name = "ct"
match = { Modality = "CT", CallingAE = "CT*", StationName = ["A", "B"], SeriesNumber = 2 }
to = ["tele", "CENTRAL"]
[[route]]
to = "pacs"
trigger = "stable-study"
stable_seconds = 300
[[retention]]
match = { ModalitiesInStudy = "CR" }
keep_days = 3653
[archive]
max_bytes = "1.5 TiB"
min_free_bytes = "20 GB"
on_limit = "Recycle"
"""
        + PEERS,
    )
    ct, everything = s.routes
    assert ct == config.Route(
        "ct",
        {"Modality": "CT", "CallingAE": "CT*", "StationName": ["A", "B"], "SeriesNumber": "2"},
        ("tele", "pacs"),
    )
    assert everything == config.Route("route2", {}, ("pacs",), "stable-study", 300)
    assert s.retention == [config.Retention("retention1", {"ModalitiesInStudy": "CR"}, 3653)]
    assert s["archive.max_bytes"] == int(1.5 * 2**40)
    assert s["archive.min_free_bytes"] == 20 * 10**9
    assert s["archive.on_limit"] == "recycle"
    assert s.as_json()["routes"][0]["to"] == ["tele", "pacs"]


def test_sizes_from_the_environment(tmp_path: Path) -> None:
    s = config.load(env={"DUCKPACS_MAX_BYTES": "500MB", "DUCKPACS_MIN_FREE_BYTES": "0"},
                    cwd=tmp_path)  # fmt: skip
    assert (s["archive.max_bytes"], s["archive.min_free_bytes"]) == (500 * 10**6, 0)


ROUTE = '[[route]]\nto = "pacs"\n'
BAD = [
    ('[[route]]\nto = ["nowhere"]\n', r"'route1': to = 'nowhere' is not a peer .* \(pacs, tele\)"),
    ("[[route]]\nname = 'x'\n", r"route 'x': to = None is invalid: expected a peer name"),
    (ROUTE + "colour = 1\n", r"route 'route1': unknown key colour"),
    (ROUTE + 'trigger = "daily"\n', r"'daily' is invalid: expected instance or stable-study"),
    (ROUTE + "stable_seconds = 5\n", r'stable_seconds applies only to trigger = "stable-study"'),
    (ROUTE + 'trigger = "stable-study"\nstable_seconds = 0\n', r"stable_seconds = 0 is invalid"),
    (ROUTE + 'match = { Modalty = "CT" }\n', r"'route1'\.match: unknown attribute 'Modalty'"),
    (ROUTE + "match = { Modality = true }\n", r"match\.Modality = True is invalid"),
    (ROUTE + 'match = "CT"\n', r"match must be a table"),
    ('[[route]]\nname = "a"\nto = "pacs"\n' * 2, r"more than one \[\[route\]\] is named 'a'"),
    ("route = 5\n", r"route must be written as \[\[route\]\] tables"),
    ("[[retention]]\nname = 'old'\n", r"retention 'old': missing keep_days"),
    ("[[retention]]\nkeep_days = 0\n", r"keep_days = 0 is invalid"),
    ('[[retention]]\nkeep_days = 9\nmatch = { CallingAE = "X" }\n', r"attribute 'CallingAE'"),
    ('[archive]\nmax_bytes = "5 XB"\n', r"max_bytes = '5 XB' is invalid: expected a number of"),
    ("[archive]\nmin_free_bytes = -1\n", r"archive\.min_free_bytes = -1 is invalid"),
    ('[archive]\non_limit = "delete"\n', r"on_limit = 'delete' is invalid: expected refuse"),
    ("[routing]\nmax_attempts = 0\n", r"routing\.max_attempts = 0 is invalid"),
    ("[routing]\nretry_max = 0\n", r"routing\.retry_max = 0 is invalid"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_each_mistake_is_one_line_naming_the_rule(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, text + PEERS)
    assert "\n" not in str(info.value)
