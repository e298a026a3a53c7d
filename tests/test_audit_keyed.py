"""Keyed hash chain (HMAC-SHA256) and the external witness of the head."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from market_agent.audit import AuditLog, load_key
from market_agent.errors import ConfigError
from market_agent.listen.metrics import ListenMetrics
from tests.cli_helpers import Result, run_cli

SECRET = b"a-secret-of-32-bytes-for-tests!!"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


def write_config(tmp_path: Path, audit: Path, key_file: Path | None) -> Path:
    config = tmp_path / "market-agent.toml"
    lines = ["[audit]", f'path = "{audit}"']
    if key_file is not None:
        lines.append(f'key_file = "{key_file}"')
    config.write_text("\n".join(lines) + "\n")
    return config


def verify(config: Path, *extra: str) -> tuple[Result, dict]:
    result = run_cli("--config", str(config), "history", "verify", "--json", *extra)
    return result, result.json_lines()[0]


def forge(path: Path, index: int) -> None:
    """Edit one record and recompute its plain SHA-256 chain onwards (what anyone can do)."""
    lines = path.read_bytes().splitlines()
    prev = json.loads(lines[index])["prev_hash"]
    for i in range(index, len(lines)):
        record = json.loads(lines[i])
        if i == index:
            record["note"] = "forged"
        record.pop("hash")
        record.pop("prev_hash")
        record.pop("key_id", None)
        body = json.dumps(record, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        lines[i] = f'{{"hash":"{digest}","prev_hash":"{prev}",{body[1:]}'.encode()
        prev = digest
    path.write_bytes(b"\n".join(lines) + b"\n")


def fill(log: AuditLog, count: int) -> None:
    for i in range(count):
        log.append("analysis", {"id": f"a{i}", "severity": "info"})


def test_a_recomputed_forgery_passes_unkeyed_and_fails_keyed(
    tmp_path: Path, key_file: Path
) -> None:
    plain, keyed = tmp_path / "plain.jsonl", tmp_path / "keyed.jsonl"
    fill(AuditLog(plain), 5)
    fill(AuditLog(keyed, key=load_key(key_file)), 5)
    forge(plain, 2)
    forge(keyed, 2)
    assert verify(write_config(tmp_path, plain, None))[0].exit_code == 0  # what it cannot prove
    result, report = verify(write_config(tmp_path, keyed, key_file))
    assert result.exit_code == 8
    assert report["line"] == 3 and "unkeyed record after keyed" in report["problem"]


def test_an_edit_with_the_old_mac_is_named(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "keyed.jsonl"
    fill(AuditLog(path, key=load_key(key_file)), 4)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"severity":"info"', b'"severity":"page"')
    path.write_bytes(b"".join(lines))
    result, report = verify(write_config(tmp_path, path, key_file))
    assert result.exit_code == 8 and report["line"] == 2
    assert "edited or forged" in report["problem"]
    assert AuditLog(path, key=load_key(key_file)).verify().line == 2


def test_readers_need_no_key_and_verify_says_what_it_did_not_check(
    tmp_path: Path, key_file: Path
) -> None:
    path = tmp_path / "keyed.jsonl"
    fill(AuditLog(path, key=load_key(key_file)), 3)
    config = write_config(tmp_path, path, None)
    listed = run_cli("--config", str(config), "history", "--json")
    assert [r["id"] for r in listed.json_lines()] == ["a2", "a1", "a0"]
    result, report = verify(config)
    assert result.exit_code == 0
    assert (report["keyed"], report["authenticated"]) == (3, False)
    text = run_cli("--config", str(config), "history", "verify")
    assert "not authenticated" in text.stdout


def test_a_key_added_later_keeps_old_records_verifiable(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(AuditLog(path), 2)
    fill(AuditLog(path, key=load_key(key_file)), 2)
    result, report = verify(write_config(tmp_path, path, key_file))
    assert result.exit_code == 0
    assert (report["records"], report["keyed"], report["authenticated"]) == (4, 2, True)


def test_the_wrong_key_is_named(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(AuditLog(path, key=b"another-key-of-enough-length"), 2)
    result, report = verify(write_config(tmp_path, path, key_file))
    assert result.exit_code == 8 and "another key" in report["problem"]


def test_key_file_readable_by_others_is_refused_and_never_printed(
    tmp_path: Path, key_file: Path
) -> None:
    key_file.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(key_file)
    config = write_config(tmp_path, tmp_path / "audit.jsonl", key_file)
    result = run_cli("--config", str(config), "history", "verify")
    assert result.exit_code == 2
    assert SECRET.decode() not in result.stdout + result.stderr


def test_expect_head_finds_an_old_head_and_catches_truncation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    fill(log, 3)
    seen = log.head()
    fill(log, 2)
    config = write_config(tmp_path, path, None)
    result, report = verify(config, "--expect-head", seen[1])
    assert result.exit_code == 0
    assert report["head"] == {
        "hash": seen[1], "found": True, "file": str(path), "line": 3, "after": 2
    }  # fmt: skip
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:2]))
    result, report = verify(config, "--expect-head", seen[1])
    assert result.exit_code == 8 and report["ok"] and not report["head"]["found"]
    assert "not in the audit log" in result.stderr
    assert (
        run_cli("--config", str(config), "history", "verify", "--expect-head", "xyz").exit_code == 2
    )


def test_metrics_expose_the_head_read_at_scrape_time(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    metrics = ListenMetrics()
    metrics.watch_audit(log)
    fill(log, 2)
    other_writer = AuditLog(log.path)  # e.g. `analyze` appending beside the listener
    record = other_writer.append("analysis", {"id": "x"})
    text = metrics.exposition().decode()
    assert "market_agent_audit_records 3.0" in text
    assert f'market_agent_audit_head_info{{hash="{record["hash"]}"}} 1.0' in text
