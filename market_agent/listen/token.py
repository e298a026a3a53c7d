"""The webhook token file: create it safely, and the Alertmanager snippet that uses it.

`market-agent listen --init-token` is the one recipe the docs give: it makes missing
directories 0700, writes a fresh random token to a 0600 file (never over an existing
one unless forced), and never shows the token itself.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from market_agent.errors import ConfigError

#: Where the token lives unless `--token-file` or `listen.token_file` says otherwise;
#: `prometheus/alertmanager.yml` and the systemd unit read it here.
DEFAULT_TOKEN_FILE = Path("/etc/market-agent/webhook-token")
TOKEN_BYTES = 32
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not a bind)


@dataclass(frozen=True, slots=True)
class CreatedToken:
    path: Path
    created_dirs: tuple[Path, ...]
    replaced: bool


def create_token_file(path: Path, *, force: bool = False) -> CreatedToken:
    """A new random token in `path` (mode 0600); refuses an existing file unless `force`."""
    path = path.expanduser().absolute()
    try:
        created_dirs = _make_parents(path.parent)
        replaced = _write_token(path, secrets.token_hex(TOKEN_BYTES), force=force)
    except OSError as exc:
        raise ConfigError(_explain(path, exc)) from None
    return CreatedToken(path, created_dirs, replaced)


def _make_parents(directory: Path) -> tuple[Path, ...]:
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for new in reversed(missing):
        new.mkdir(mode=0o700)
        new.chmod(0o700)  # exactly 0700, whatever the umask
    return tuple(reversed(missing))


def _write_token(path: Path, token: str, *, force: bool) -> bool:
    """Write without a window where the file exists with other content or mode."""
    if not force:
        _write_new(path, token)  # O_EXCL: an existing file (or symlink) is refused
        return False
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    replaced = path.exists() or path.is_symlink()
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new(staging, token)
        staging.replace(path)  # a symlink at `path` is replaced, never followed
    finally:
        staging.unlink(missing_ok=True)
    return replaced


def _write_new(path: Path, token: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _explain(path: Path, exc: OSError) -> str:
    if exc.errno == errno.EEXIST:
        return (
            f"--init-token: {path} already exists (listen and Alertmanager may be using it); "
            "pass --force to replace it with a new token"
        )
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = (
            " (run it as the user who owns that directory, e.g. with sudo, "
            "or pick another --token-file)"
        )
    where = exc.filename or path
    return f"--init-token: cannot create {where}: {exc.strerror or exc}{hint}"


def alertmanager_snippet(path: Path, host: str, port: int) -> str:
    """The `receivers:` entry of alertmanager.yml that posts to this listener with `path`."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    url_host = f"[{host.strip('[]')}]" if ":" in host else host
    return f"""\
# alertmanager.yml: route predictor alerts to this receiver (see prometheus/alertmanager.yml)
receivers:
  - name: market-agent
    webhook_configs:
      - url: http://{url_host}:{port}/webhook/alerts
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials_file: {json.dumps(str(path))}
"""
