"""`analyze` prints no secret that the alert text held, in any output form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from market_agent.models import Analysis
from market_agent.redact import REDACTED, redact_model
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES


def leaky_notification(tmp_path: Path) -> Path:
    payload = json.loads((EXAMPLES / "predictor-down.json").read_text())
    annotations = payload["alerts"][0]["annotations"]
    annotations["summary"] = "Predictor down, login password=hunter2 failed"
    annotations["description"] = "Authorization: Bearer abc123 was refused"
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize("form", [["--json"], []])
def test_rule_analyses_quote_alert_text_redacted(tmp_path: Path, form: list[str]) -> None:
    result = run_cli("--no-audit", "analyze", "--no-llm", *form, str(leaky_notification(tmp_path)))
    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "abc123" not in result.stdout
    assert REDACTED in result.stdout


def test_the_audit_copy_and_the_output_agree(tmp_path: Path, audit_path: Path) -> None:
    result = run_cli("analyze", "--no-llm", "--json", str(leaky_notification(tmp_path)))
    (printed,) = result.json_lines()
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    (audited,) = [record for record in records if record["kind"] == "analysis"]
    assert audited["description"] == printed["description"]
    assert audited["alerts"] == printed["alerts"]


def test_a_model_without_secrets_is_returned_as_is() -> None:
    result = run_cli(
        "--no-audit", "analyze", "--no-llm", "--json", str(EXAMPLES / "high-latency.json")
    )
    analysis = Analysis.model_validate(result.json_lines()[0])
    assert redact_model(analysis) is analysis
