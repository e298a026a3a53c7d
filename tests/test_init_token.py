"""`listen --init-token`: one recipe for the webhook token, and the start-up auth line."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from market_agent.listen.http import auth_mode, check_auth
from market_agent.listen.token import DEFAULT_TOKEN_FILE, create_token_file
from market_agent.settings import ListenSettings
from tests.cli_helpers import run_cli
from tests.conftest import ROOT
from tests.helpers import free_port
from tests.helpers.processes import ManagedProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def init_token(path: Path, *extra: str):
    return run_cli("--no-audit", "listen", "--init-token", "--token-file", str(path), *extra)


def test_creates_missing_directories_0700_and_a_0600_token(tmp_path: Path) -> None:
    path = tmp_path / "fresh-home" / ".config" / "market-agent" / "webhook-token"
    result = init_token(path)
    assert result.exit_code == 0, result.stderr
    token = path.read_text().strip()
    assert len(token) == 64 and int(token, 16) >= 0  # 32 random bytes, hex
    assert mode(path) == 0o600
    for directory in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert mode(directory) == 0o700
    assert token not in result.stdout + result.stderr


def test_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    shared = tmp_path / "etc"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    assert init_token(shared / "webhook-token").exit_code == 0
    assert mode(shared) == 0o750


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "webhook-token"
    path.write_text("in-use\n")
    refused = init_token(path)
    assert refused.exit_code == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert path.read_text() == "in-use\n"
    forced = init_token(path, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert path.read_text().strip() != "in-use"
    assert mode(path) == 0o600
    assert "replaced" in forced.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    link = tmp_path / "webhook-token"
    link.symlink_to(target)
    assert init_token(link).exit_code == 2
    assert init_token(link, "--force").exit_code == 0
    assert target.read_text() == "untouched\n"
    assert not link.is_symlink() and mode(link) == 0o600


def test_prints_an_alertmanager_receiver_that_uses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dir with: colon #" / "webhook-token"
    result = run_cli(
        "--no-audit", "listen", "--port", "9123", "--init-token", "--token-file", str(path)
    )
    assert result.exit_code == 0, result.stderr
    (receiver,) = yaml.safe_load(result.stdout)["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9123/webhook/alerts"
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": str(path),
    }
    assert f"--token-file {path}" in result.stderr


def test_the_default_path_is_the_configured_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "from-config" / "token"
    monkeypatch.setenv("MARKET_AGENT_LISTEN__TOKEN_FILE", str(configured))
    result = run_cli("--no-audit", "listen", "--init-token")
    assert result.exit_code == 0, result.stderr
    assert mode(configured) == 0o600
    assert str(DEFAULT_TOKEN_FILE) == "/etc/market-agent/webhook-token"


def test_an_unwritable_place_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = init_token(blocker / "webhook-token")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "cannot create" in result.stderr


def test_the_umask_of_the_caller_is_left_alone(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        create_token_file(tmp_path / "t")
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_every_doc_uses_the_one_recipe_and_the_one_path() -> None:
    docs = {
        name: (ROOT / name).read_text()
        for name in (
            "README.md",
            "prometheus/README.md",
            "prometheus/alertmanager.yml",
            "examples/systemd/market-agent.service",
        )
    }
    for name, text in docs.items():
        for stale in ("openssl rand", "/dev/urandom", "umask 077;"):
            assert stale not in text, f"{name} still makes the token by hand ({stale})"
    for name in ("README.md", "prometheus/README.md", "examples/systemd/market-agent.service"):
        assert "listen --init-token" in docs[name], name
    manager = yaml.safe_load(docs["prometheus/alertmanager.yml"])
    (receiver,) = [r for r in manager["receivers"] if r["name"] == "market-agent"]
    credentials = receiver["webhook_configs"][0]["http_config"]["authorization"]
    assert credentials["credentials_file"] == str(DEFAULT_TOKEN_FILE)


# The start-up line -----------------------------------------------------------------


def test_no_token_on_loopback_warns_and_says_what_to_run(caplog) -> None:
    caplog.set_level(logging.INFO)
    assert check_auth(ListenSettings()) is None
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "authentication is OFF" in warning and "listen --init-token" in warning


def test_auth_mode_names_the_source_never_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    assert auth_mode(ListenSettings(token_file=token_file), {}) == (
        f"bearer token from file {token_file}"
    )
    from_env = ListenSettings(token="s3cret")
    assert auth_mode(from_env, {"MARKET_AGENT_LISTEN__TOKEN": "s3cret"}) == (
        "bearer token from $MARKET_AGENT_LISTEN__TOKEN"
    )
    assert "s3cret" not in auth_mode(from_env, {})
    assert auth_mode(ListenSettings(), {}).startswith("none")


@pytest.mark.slow
def test_a_listener_started_with_the_new_token_says_so_and_requires_it(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "webhook-token"
    assert init_token(path).exit_code == 0
    port = free_port()
    argv = [
        sys.executable, "-m", "market_agent", "--audit-log", str(tmp_path / "audit.jsonl"),
        "listen", "--port", str(port), "--token-file", str(path),
        "--analysis", "threads", "--no-llm",
    ]  # fmt: skip
    log = tmp_path / "listen.log"
    with ManagedProcess(argv, log_path=log) as process:
        process.wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=20)
        url = f"http://127.0.0.1:{port}/webhook/alerts"
        assert httpx.post(url, content=b"{}", timeout=5).status_code == 401
        bearer = {"Authorization": f"Bearer {path.read_text().strip()}"}
        assert httpx.post(url, content=b"{}", headers=bearer, timeout=5).status_code == 422
    text = log.read_text()
    (line,) = [x for x in text.splitlines() if "listening on" in x]
    assert f"http://127.0.0.1:{port}/webhook/alerts; auth: bearer token from file {path}" in line
    assert "authentication is OFF" not in text
    assert path.read_text().strip() not in text


def test_force_alone_is_refused() -> None:
    result = run_cli("--no-audit", "listen", "--force")
    assert result.exit_code == 2
    assert "--force only applies with --init-token" in result.stderr


def test_the_printed_receiver_is_a_valid_alertmanager_config(tmp_path: Path) -> None:
    from tests.helpers.debian import ensure_debian_packages

    amtool = ensure_debian_packages("amtool")["amtool"]
    token = tmp_path / "webhook-token"
    printed = yaml.safe_load(init_token(token).stdout)
    config = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text())
    config["receivers"] = [r for r in config["receivers"] if r["name"] != "market-agent"]
    config["receivers"] += printed["receivers"]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
