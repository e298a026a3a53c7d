"""Security review, as tests: tokens, file modes, redaction, no shell, loopback by default."""

from __future__ import annotations

import ast
import hmac
import json
from pathlib import Path

import pytest

from market_agent.settings import ListenSettings, load_settings
from tests.cli_helpers import run_cli
from tests.conftest import EXAMPLES, ROOT

PACKAGE = ROOT / "market_agent"


def test_webhook_token_is_compared_in_constant_time(monkeypatch, tmp_path: Path) -> None:
    from market_agent.audit import AuditLog
    from market_agent.listen import http as server
    from market_agent.listen.admission import Listener
    from tests.test_listen_pipeline import FakeService

    calls: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def recording_compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(server.hmac, "compare_digest", recording_compare)
    listener = Listener(AuditLog(tmp_path / "a.jsonl"), FakeService())
    app = server.WebhookApp(listener, token="s3cret-token", max_body_bytes=1024)
    scope = {"headers": [(b"authorization", b"Bearer wrong-token")]}
    assert app._authorized(scope) is False
    assert calls == [(b"wrong-token", b"s3cret-token")]


def test_listener_binds_loopback_by_default() -> None:
    assert ListenSettings().host == "127.0.0.1"
    assert load_settings().listen.host == "127.0.0.1"
    import inspect

    from market_agent.commands.listen import listen

    host = inspect.signature(listen).parameters["host"].default
    assert host in (None, "127.0.0.1")


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_no_shell_anywhere_in_the_package() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            name = ast.unparse(call.func)
            if name in {
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            }:
                offenders.append(f"{path}:{call.lineno} {name}")
            for keyword in call.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offenders.append(f"{path}:{call.lineno} shell=")
    assert offenders == []


def test_audit_log_is_0600_and_holds_no_secrets(audit_path: Path, tmp_path: Path) -> None:
    payload = json.loads((EXAMPLES / "predictor-down.json").read_text())
    payload["alerts"][0]["annotations"]["description"] = (
        "db login failed with password=hunter2; header Authorization: Bearer abcdefghijklmnop"
    )
    payload["alerts"][0]["labels"]["api_key"] = "AKIAABCDEFGHIJKLMNOP"
    result = run_cli("analyze", "--json", "-", stdin=json.dumps(payload).encode())
    assert result.exit_code == 0
    text = audit_path.read_text()
    for secret in ("hunter2", "abcdefghijklmnop", "AKIAABCDEFGHIJKLMNOP"):
        assert secret not in text
    assert audit_path.stat().st_mode & 0o777 == 0o600
    assert audit_path.parent.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "value", ['["sk-live-abcdef0123456789"]', "{ x = 'sk-live-abcdef0123456789' }"]
)
def test_debug_output_never_shows_config_secrets(tmp_path: Path, value: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[llm]\napi_key = {value}\n")
    result = run_cli("--debug", "--config", str(config), "analyze", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == 2
    assert "sk-live-abcdef0123456789" not in result.stderr + result.stdout


def test_debug_output_of_a_failing_llm_call_hides_the_key(httpx_mock, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-debug-visible-0123456789")
    monkeypatch.setenv("MARKET_AGENT_LLM__BASE_URL", "http://llm.test/v1")
    httpx_mock.add_response(status_code=401, json={"error": {"message": "bad key"}})
    result = run_cli("--debug", "--no-audit", "analyze", "--json", str(EXAMPLES / "resolved.json"))
    assert result.exit_code == 0
    assert "sk-debug-visible-0123456789" not in result.stderr + result.stdout
