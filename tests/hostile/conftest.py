"""A real `ghostcrate serve` to attack, and well-behaved clients that must not notice."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.appliance import Appliance
from tests.support.bystander import Bystanders, worker_pids
from tests.support.crates import index_path


@dataclass
class Target:
    """An appliance whose index file and crate are cached, as clients find it."""

    appliance: Appliance
    #: An index file in the hot set, which the well-behaved clients ask for.
    path: str

    @property
    def port(self) -> int:
        return self.appliance.port

    def pids(self) -> list[int]:
        assert self.appliance.process is not None
        return worker_pids(self.appliance.process.pid, self.appliance.workers)

    def bystanders(self) -> Bystanders:
        return Bystanders(self.port, self.path, self.pids())

    def log_lines(self) -> list[str]:
        return self.appliance.log.read_text(errors="replace").splitlines()

    def assert_no_traceback(self) -> None:
        """Every error was logged in one line: no traceback, no `exception` field."""
        for line in self.log_lines():
            assert "Traceback" not in line, line
            if line.startswith("{"):
                assert "exception" not in json.loads(line), line


@pytest.fixture
def target(start_appliance: Callable[..., Appliance]) -> Callable[..., Target]:
    """Start an appliance (`workers` as asked) with `abc`'s index file and a crate cached."""

    def start(workers: int = 1) -> Target:
        appliance = start_appliance(server={"workers": workers})
        path = f"/index/{index_path('abc')}"
        for _ in range(2 * workers):  # each worker's hot set, more or less
            assert appliance.get(path)[0] == 200
            assert appliance.get("/api/v1/crates/abc/0.2.0/download")[0] == 200
        return Target(appliance, path)

    return start
