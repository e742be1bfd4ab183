"""docs/alerts.yml: valid Prometheus rules, unit-tested, on metrics GhostCrate exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "alerts_test.yml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is needed (Debian package: prometheus; bootstrap-tests)"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(RULES), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_the_rules_fire_as_their_unit_tests_expect(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_rules_use_is_documented() -> None:
    """The README's metric table lists what GhostCrate exports (its tests keep it true)."""
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"ghostcrate_[a-z_]+", RULES.read_text()))
    assert used
    for name in sorted(used):
        base = re.sub(r"_(total|count|sum|bucket)$", "", name)
        assert f"`{base}" in readme, f"{name} is not in the README's metrics table"
