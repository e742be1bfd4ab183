"""Failed sign-ins are throttled across workers, and nothing tells whether an account exists."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.appliance import Appliance
from tests.support.private import create_token, errors
from tests.support.sessions import me, post_json, sign_in

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"


def add_password_user(appliance: Appliance, name: str) -> None:
    added = appliance.run("user", "add", name, "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr


def attempt(appliance: Appliance, name: str, password: str) -> tuple[int, bytes]:
    return post_json(appliance, "/api/v1/session", {"name": name, "password": password})


def retry_after(appliance: Appliance, name: str, password: str) -> tuple[int, str | None, bytes]:
    """Status, Retry-After and body of one sign-in."""
    request = urllib.request.Request(
        appliance.url + "/api/v1/session",
        data=json.dumps({"name": name, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("Retry-After"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Retry-After"), error.read()


def throttling_pids(appliance: Appliance) -> set[int]:
    """The workers that logged a throttled sign-in, once both have (or 5 s passed)."""
    deadline = time.monotonic() + 5
    while True:
        events = appliance.events()
        pids = {int(e["pid"]) for e in events if e.get("msg") == "sign-in throttled"}
        if len(pids) == 2 or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def test_sign_ins_are_throttled_across_workers_the_same_for_unknown_names(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance(
        server={"workers": 2},
        tables={
            "auth": {
                "login_failures": 3,
                "login_address_failures": 8,
                "login_window_seconds": 60,
            }
        },
    )
    add_password_user(appliance, "alice")
    add_password_user(appliance, "carol")
    disable = appliance.run("user", "disable", "carol")
    assert disable.returncode == 0, disable.stderr

    # A wrong password, an unknown name and a disabled user: one answer for all, after
    # the same work (a password hash is checked for an unknown name too).
    answers: dict[str, list[tuple[int, bytes]]] = {"alice": [], "ghost": []}
    seconds: dict[str, list[float]] = {"alice": [], "ghost": []}
    for _ in range(3):
        for name in ("alice", "ghost"):
            started = time.perf_counter()
            answers[name].append(attempt(appliance, name, "wrong password"))
            seconds[name].append(time.perf_counter() - started)
    assert min(seconds["ghost"]) > 0.3 * sorted(seconds["alice"])[1], seconds
    disabled = attempt(appliance, "carol", PASSWORD)
    assert answers["alice"] == answers["ghost"] == [disabled] * 3
    assert disabled[0] == 403
    assert errors(disabled[1]) == "sign-in failed: the name or the password is wrong"

    # The fourth try is throttled on whichever worker, even with the right password.
    throttled = [retry_after(appliance, name, PASSWORD) for name in ("alice", "ghost") * 6]
    assert {status for status, _, _ in throttled} == {429}
    assert {body for _, _, body in throttled} == {throttled[0][2]}
    waits = {int(wait or 0) for _, wait, _ in throttled}
    assert all(55 <= wait <= 60 for wait in waits), waits
    assert "too many failed sign-ins" in errors(throttled[0][2])
    assert len(throttling_pids(appliance)) == 2, "both workers should have throttled"

    # Per address: 7 failures so far from 127.0.0.1; the eighth closes it for every name.
    assert attempt(appliance, "dave", "wrong password")[0] == 403
    status, wait, body = retry_after(appliance, "erin", "anything at all")
    assert (status, wait is not None, body) == (429, True, throttled[0][2])


def test_a_disabled_user_is_refused_on_every_worker_within_a_second(
    start_appliance: StartAppliance,
) -> None:
    """Probes with the user's API token and session token run while `user disable` runs.

    A probe is a yank of a crate that does not exist: 404 while the user may act
    (authenticated, then not found), 403 once disabled.
    """
    # The probes come as fast as they can: the API's rate limits are not what is tested.
    appliance = start_appliance(server={"workers": 2}, tables={"limits": {"enabled": False}})
    add_password_user(appliance, "alice")
    token = create_token(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)["token"]
    probes: list[tuple[float, str, int]] = []  # (sent at, which, status)
    stop = threading.Event()

    def probe_until_stopped() -> None:
        while not stop.is_set():
            for which, credential in (("token", token), ("session", session)):
                path = f"/api/v1/crates/probe-{len(probes)}/1.0.0/yank"
                sent = time.time()
                status, _ = appliance.request("DELETE", path, headers={"Authorization": credential})
                probes.append((sent, which, status))

    prober = threading.Thread(target=probe_until_stopped)
    prober.start()
    try:
        time.sleep(0.5)
        disabled_at = time.time()
        disabled = appliance.run("user", "disable", "alice")
        assert disabled.returncode == 0, disabled.stderr
        done_at = time.time()
        time.sleep(1.5)
    finally:
        stop.set()
        prober.join()

    for which in ("token", "session"):
        mine = [(sent, status) for sent, kind, status in probes if kind == which]
        assert {status for sent, status in mine if sent < disabled_at} == {404}, which
        late = [status for sent, status in mine if sent >= done_at + 1.0]
        assert late, which
        assert set(late) == {403}, which
    assert me(appliance, session)[0] == 403
    assert "disabled" in errors(me(appliance, token)[1])
    status, body = attempt(appliance, "alice", PASSWORD)
    assert (status, errors(body)) == (403, "sign-in failed: the name or the password is wrong")

    enabled = appliance.run("user", "enable", "alice")
    assert enabled.returncode == 0, enabled.stderr
    time.sleep(1.0)
    for _ in range(12):
        assert me(appliance, session)[0] == 200
        assert me(appliance, token)[0] == 200


def test_parallel_guesses_do_not_slip_past_the_limit(start_appliance: StartAppliance) -> None:
    appliance = start_appliance(
        server={"workers": 2}, tables={"auth": {"login_failures": 3, "login_window_seconds": 60}}
    )
    add_password_user(appliance, "alice")
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: attempt(appliance, "alice", "guess"), range(12)))
    assert sorted(status for status, _ in answers) == [403] * 3 + [429] * 9
    # A success takes its own count back and forgives the account's failures.
    later = start_appliance(tables={"auth": {"login_failures": 3, "login_window_seconds": 60}})
    add_password_user(later, "bob")
    for _ in range(2):
        assert attempt(later, "bob", "guess")[0] == 403
    sign_in(later, "bob", PASSWORD)
    for _ in range(3):
        assert attempt(later, "bob", "guess")[0] == 403
    assert attempt(later, "bob", PASSWORD)[0] == 429
