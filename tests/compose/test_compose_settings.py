"""`compose/docker-compose.yml` passes every setting of `rtmsflow/settings.py` on to the stages, or
`compose_check.NOT_PASSED` says why not: the static half of `scripts/compose-check`, which needs
podman and root, so that a new setting the compose file misses fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "compose" / "local" / "compose_check.py"


def settings_check(compose_file: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, str(CHECK), "settings", str(compose_file)], capture_output=True, text=True, cwd=ROOT
    )
    return done.returncode, json.loads(done.stdout)


def test_the_compose_file_passes_every_setting_or_says_why_not() -> None:
    code, result = settings_check(ROOT / "compose" / "docker-compose.yml")
    assert result["problems"] == [] and code == 0
    assert "RTMSFLOW_RTMS_VIDEO_MODE" in result["passed"]  # settings added after the file was written


def test_a_setting_left_out_of_the_compose_file_fails_the_check(tmp_path: Path) -> None:
    """The positive control: the same file without one setting's line."""
    text = (ROOT / "compose" / "docker-compose.yml").read_text()
    assert "  RTMSFLOW_RTMS_VIDEO_PARTICIPANTS:\n" in text
    trimmed = tmp_path / "docker-compose.yml"
    trimmed.write_text(text.replace("  RTMSFLOW_RTMS_VIDEO_PARTICIPANTS:\n", ""))
    code, result = settings_check(trimmed)
    assert code == 1
    assert any("RTMSFLOW_RTMS_VIDEO_PARTICIPANTS" in problem for problem in result["problems"])  # type: ignore[attr-defined]
