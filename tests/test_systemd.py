"""The systemd unit and its example configuration are valid as shipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ghostcrate.service"
EXAMPLE_CONFIG = ROOT / "systemd" / "ghostcrate.toml"
#: Where the units expect the command (README: a venv in /opt/ghostcrate).
INSTALLED = "/opt/ghostcrate/bin/ghostcrate"


@pytest.mark.parametrize(
    "units",
    [("ghostcrate.service",), ("ghostcrate-backup.service", "ghostcrate-backup.timer")],
)
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path, units: tuple[str, ...]) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is needed (Debian package: systemd)"
    ghostcrate = Path(sys.executable).parent / "ghostcrate"
    for name in units:
        text = (UNIT.parent / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/opt/ghostcrate/bin/ghostcrate", str(ghostcrate))
        )
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
    assert "ignoring" not in result.stderr, result.stderr


def test_the_example_configuration_is_valid() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ghostcrate", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "GHOSTCRATE_CONFIG": str(EXAMPLE_CONFIG)},
    )
    assert result.returncode == 0, result.stderr
    assert "server.workers = 2" in result.stdout
    assert "data_dir = '/var/lib/ghostcrate'" in result.stdout


@pytest.mark.parametrize(
    ("unit", "limit"), [("ghostcrate.service", 2.0), ("ghostcrate-backup.service", 1.0)]
)
def test_the_units_exposure_as_systemd_analyze_security_scores_it(
    tmp_path: Path, unit: str, limit: float
) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is needed (Debian package: systemd)"
    copy = tmp_path / unit
    copy.write_text((UNIT.parent / unit).read_text())
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    exposure = float(found.group(1))
    print(f"\n{unit}: systemd-analyze security exposure {exposure} (at most {limit})")
    assert exposure <= limit, result.stdout
