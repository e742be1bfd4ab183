"""`[limits]` rates as written, and the shared table that keeps their budgets (GCRA)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ghostcrate.appliance.limit_table import BUCKETS, SLOTS, LimitTable
from ghostcrate.appliance.limits import DOWNLOAD, route_class
from ghostcrate.config import load_settings
from ghostcrate.config.rates import Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/minute", Rate(10, 60, 10)),
        ("3/2s", Rate(3, 2, 3)),
        ("30/10s burst 60", Rate(30, 10, 60)),
        (" 5 / hour  burst 1 ", Rate(5, 3600, 1)),
        ("1000/day", Rate(1000, 86400, 1000)),
        ("0", None),
        ("off", None),
    ],
)
def test_rates_are_read_as_documented(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["10", "10/", "/minute", "10/week", "0/s", "5/0s", "1/s burst"])
def test_what_is_not_a_rate_says_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match=r'like "10/minute"'):
        parse_rate(text)


def test_limits_have_defaults_and_0_switches_one_off(tmp_path: Path) -> None:
    path = tmp_path / "ghostcrate.toml"
    path.write_text('[limits.publish]\nper_token = "5/minute burst 9"\nper_address = 0\n')
    limits = load_settings(path, {}).settings.limits
    assert limits.enabled
    assert parse_rate(limits.publish.per_token) == Rate(5, 60, 9)
    assert limits.publish.per_address == "off"
    assert parse_rate(limits.publish.per_user) == Rate(30, 60, 300)  # the class's default
    assert parse_rate(limits.api.per_address) == Rate(3000, 60, 6000)


@pytest.mark.parametrize(
    ("method", "path", "route", "expected"),
    [
        ("PUT", "/api/v1/crates/new", "/api/v1/crates/new", "publish"),
        ("POST", "/api/v1/session", "/api/v1/session", "login"),
        ("DELETE", "/api/v1/session", "/api/v1/session", "api"),
        ("POST", "/api/v1/session/refresh", "/api/v1/session/refresh", "login"),
        ("GET", "/api/v1/sso/corp/callback", "/api/v1/sso/{provider}/callback", "login"),
        ("GET", "/api/v1/crates", "/api/v1/crates", "search"),
        ("HEAD", "/api/v1/crates", "/api/v1/crates", "search"),
        ("GET", "/api/v1/crates/abc", "/api/v1/crates/{name}", "api"),
        ("GET", "/api/v1/nothing", None, "api"),
        ("GET", "/api/v1/crates/a/1.0.0/download", DOWNLOAD, None),
        ("GET", "/index/3/a/abc", "/index/{path}", None),
        ("GET", "/healthz", "/healthz", None),
        ("GET", "/metrics", "/metrics", None),
    ],
)
def test_route_classes(method: str, path: str, route: str | None, expected: str | None) -> None:
    assert route_class(method, path, route) == expected


def test_a_burst_then_one_per_interval(tmp_path: Path) -> None:
    table = LimitTable(tmp_path / "limits")
    rate = Rate(2, 10, 3)  # one per 5 s, three at once
    key = table.fingerprint("api\0per_token\0a")
    assert [table.take(key, rate, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take(key, rate, 100.0) == pytest.approx(5.0)
    assert table.take(key, rate, 104.0) == pytest.approx(1.0)  # refusals spend nothing
    assert table.take(key, rate, 105.0) == 0.0
    assert table.take(key, rate, 105.0) > 0
    assert table.take(key, rate, 200.0) == 0.0  # quiet for long: a whole burst again
    other = table.fingerprint("api\0per_token\0b")
    assert table.take(other, Rate(1, 60, 1), 200.0) == 0.0  # another key, its own budget
    table.close()


def test_give_back_undoes_a_take(tmp_path: Path) -> None:
    table = LimitTable(tmp_path / "limits")
    rate = Rate(1, 60, 1)
    key = table.fingerprint("k")
    assert table.take(key, rate, 10.0) == 0.0
    table.give_back(key, rate)
    assert table.take(key, rate, 10.0) == 0.0
    assert table.take(key, rate, 10.0) == pytest.approx(60.0)
    table.close()


def test_a_state_far_ahead_of_the_clock_counts_as_one_burst_ahead(tmp_path: Path) -> None:
    table = LimitTable(tmp_path / "limits")
    key = table.fingerprint("k")
    assert table.take(key, Rate(1, 3600, 1), 1000.0) == 0.0  # next at 4600
    # A reload makes the rate 1/10s: the wait is one interval, not the old hour.
    assert table.take(key, Rate(1, 10, 1), 1000.0) == pytest.approx(10.0)
    table.close()


def test_a_full_bucket_forgets_the_key_nearest_a_full_budget(tmp_path: Path) -> None:
    table = LimitTable(tmp_path / "limits")
    rate = Rate(1, 60, 1)
    same_bucket: list[int] = []
    number = 0
    while len(same_bucket) < SLOTS + 1:
        key = table.fingerprint(str(number))
        if key % BUCKETS == 0:
            same_bucket.append(key)
        number += 1
    for at, key in enumerate(same_bucket[:SLOTS]):
        assert table.take(key, rate, 100.0 + at) == 0.0
    assert table.take(same_bucket[SLOTS], rate, 110.0) == 0.0  # takes the oldest's slot
    assert table.take(same_bucket[0], rate, 110.0) == 0.0  # forgotten: allowed again
    assert table.take(same_bucket[SLOTS - 1], rate, 110.0) > 0  # the others are kept
    table.close()


def _spend(path: Path, count: int, allowed: multiprocessing.Queue[int]) -> None:
    table = LimitTable(path)
    key = table.fingerprint("shared")
    allowed.put(sum(table.take(key, Rate(100, 3600, 100), 1000.0) == 0.0 for _ in range(count)))
    table.close()


def test_processes_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "limits"
    LimitTable(path).close()
    allowed: multiprocessing.Queue[int] = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_spend, args=(path, 300, allowed)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    totals = [allowed.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(30)
    assert sum(totals) == 100


def test_the_file_keeps_its_salt_and_no_key_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "limits"
    first = LimitTable(path)
    key = first.fingerprint("api\0per_token\0gcr_secret")
    first.take(key, Rate(1, 60, 1), 1.0)
    first.close()
    again = LimitTable(path)
    assert again.fingerprint("api\0per_token\0gcr_secret") == key
    again.close()
    assert b"gcr_secret" not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_readme_shows_the_defaults(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("[limits]\n")
    lines = readme[start : readme.index("```", start)].splitlines()
    # The [limits] tables, up to the next table that is not one of them.
    after = [n for n, line in enumerate(lines) if line.startswith("[") and "limits" not in line]
    block = "\n".join(lines[: after[0] if after else None])
    path = tmp_path / "ghostcrate.toml"
    path.write_text(block)
    assert load_settings(path, {}).settings.limits == load_settings(None, {}).settings.limits
    assert {line.split("]")[0] + "]" for line in block.splitlines() if line.startswith("[")} == {
        "[limits]",
        *(f"[limits.{name}]" for name in ("publish", "login", "search", "api")),
    }
