"""The configuration reference is written from the models: complete, and docs/ holds it current."""

from __future__ import annotations

from pathlib import Path

import pytest

from interference.cli import main
from interference.config_reference import reference, undescribed

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "configuration-reference.md"


def test_every_setting_says_what_it_means() -> None:
    assert undescribed() == []


def test_the_reference_in_docs_is_what_the_code_writes() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == reference(), (
        "docs/configuration-reference.md is out of date: run `make docs`"
    )


def test_the_reference_shows_defaults_bounds_and_kinds() -> None:
    text = reference()
    for row in (
        "| `parallel` | integer | `8` | slots decoded together (>= 1, <= 64) |",
        "| `context` | integer | `32768` |",
        "| `rope_scaling` | `auto` \\| `yarn` \\| `none` | `auto` |",
        "| `port` | integer | `1337` | port to listen on (0: any free) (>= 0, <= 65535) |",
        "| `strategy` | `least-busy` \\| `round-robin` \\| `latency` \\| `ordered` |",
        "| `ca_bundle` | string or null | null |",
    ):
        assert row in text, row
    for heading in (
        "## `server.limits`",
        "## `providers.NAME (kind: local)`",
        "## `providers.NAME.sampling`",
        "## `providers.NAME (kind: openai ...)`",
        "## `models.NAME.deployments[]`",
        "## `routing.cooldown`",
    ):
        assert heading in text, heading


def test_check_tells_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "reference.md"
    current.write_text(reference(), encoding="utf-8")
    assert main(["config", "reference", "--check", str(current)]) == 0
    current.write_text(reference().replace("`2048`", "`4096`"), encoding="utf-8")
    assert main(["config", "reference", "--check", str(current)]) == 1
    assert "make docs" in capsys.readouterr().err
