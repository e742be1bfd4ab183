"""The systemd unit and its example configuration are valid as shipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ghostcrate.service"
EXAMPLE_CONFIG = ROOT / "systemd" / "ghostcrate.toml"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is needed (Debian package: systemd)"
    ghostcrate = Path(sys.executable).parent / "ghostcrate"
    unit = tmp_path / "ghostcrate.service"
    unit.write_text(UNIT.read_text().replace("/opt/ghostcrate/bin/ghostcrate", str(ghostcrate)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
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
