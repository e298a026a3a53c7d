"""bench/eval_llm.py end to end on a few alerts, against the scripted LLM server."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT
from tests.helpers.scripted_llm import Answer, ScriptedLLM, Status

VERDICT = {
    "issue_detected": False,  # a firing alert: the policy must say true
    "severity": "info",
    "issue_type": "resource",
    "description": "Resource saturation.",
    "recommended_actions": ["Look at the host"],
    "proposed_action": "none",
    "confidence": 0.7,
    "requires_immediate_action": False,
}


def eval_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eval_llm", ROOT / "bench" / "eval_llm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_llm"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dev_rows(tmp_path: Path) -> Path:
    """Four labelled notifications in the dev set's format (two classes)."""
    base = json.loads((ROOT / "examples" / "alerts" / "high-latency.json").read_text())
    rows = []
    for n, (kind, severity) in enumerate(
        [
            ("resource", "warning"),
            ("resource", "critical"),
            ("availability", "p1"),
            ("resource", "warning"),
        ]
    ):
        payload = json.loads(json.dumps(base))
        payload["alerts"][0]["labels"]["severity"] = severity
        payload["alerts"][0]["fingerprint"] = f"{n:016x}"
        rows.append({"id": f"t/{n}", "expect": {"issue_type": [kind], "label_severity": severity},
                     "payload": payload})  # fmt: skip
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("mode", ["json_schema", "function_calling"])
def test_eval_reports_rules_and_llm_side_by_side(tmp_path, capsys, mode: str) -> None:
    script = [Answer(VERDICT), Answer(VERDICT), Status(400), Answer("not json")]
    with ScriptedLLM(script) as llm:
        argv = ["--base-url", llm.url, "--model", "scripted", "--structured-output", mode,
                "--data", str(dev_rows(tmp_path)), "--limit", "4", "--timeout", "5",
                "--price-in", "1", "--price-out", "2", "--json"]  # fmt: skip
        eval_module().main(argv)
    results = json.loads(capsys.readouterr().out)
    rules, model = results["rules"], results["llm"]
    assert rules["alerts"] == model["alerts"] == 4
    assert model["answered_by_llm"] == 2
    # As in production, a fallback counts with the rules' answer (performance, a miss).
    assert model["recall_by_class"]["resource"] == 0.667
    assert model["policy_overrides"]["issue_detected"] == 2
    assert model["policy_overrides"]["severity"] == 2
    assert model["fallbacks"] == {
        "LLM endpoint answered HTTP 400": 1,
        "LLM output is not JSON: Expecting value at line 1 column 1": 1,
    }
    assert (model["tokens_in"], model["tokens_out"]) == (642, 108)
    assert model["cost_usd"] == round((642 * 1 + 108 * 2) / 1e6, 4)
    assert rules["fallbacks"] == {} and rules["tokens_in"] == 0


def test_eval_prints_a_table(tmp_path, capsys) -> None:
    with ScriptedLLM([Answer(VERDICT)]) as llm:
        eval_module().main(["--base-url", llm.url, "--model", "m", "--limit", "2",
                            "--data", str(dev_rows(tmp_path))])  # fmt: skip
    out = capsys.readouterr().out
    for line in ("macro recall", "severity agrees with the label", "latency p95 (ms)",
                 "estimated cost (USD)", "policy overrides of the model, by field:"):  # fmt: skip
        assert line in out


def test_eval_rejects_an_unlabelled_file(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"payload": {}}\n')
    with pytest.raises(SystemExit, match=r"bad\.jsonl:1: not a labelled notification"):
        eval_module().main(["--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                            "--data", str(bad)])  # fmt: skip
