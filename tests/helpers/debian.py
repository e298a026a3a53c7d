"""Install the Debian packages that real-server tests need."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import pytest

# binary -> Debian package that ships it
PACKAGE_OF: dict[str, str] = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "systemd-analyze": "systemd",
}


def ensure_debian_packages(*binaries: str) -> dict[str, str]:
    """Return ``{binary: absolute path}``, apt-installing the packages of missing ones.

    Runs ``apt-get install -y --no-install-recommends`` (after ``apt-get update``
    if the first try fails). Fails the test with a clear message when the
    install is impossible; never skips. Binaries must be keys of PACKAGE_OF.
    """
    unknown = sorted(set(binaries) - set(PACKAGE_OF))
    if unknown:
        raise ValueError(f"no known Debian package for {unknown}; add it to PACKAGE_OF")
    missing = [binary for binary in binaries if shutil.which(binary) is None]
    if missing:
        _apt_install(sorted({PACKAGE_OF[binary] for binary in missing}))
    paths = {binary: shutil.which(binary) for binary in binaries}
    still_missing = [binary for binary, path in paths.items() if path is None]
    if still_missing:
        pytest.fail(f"installed packages but {still_missing} still not on PATH", pytrace=False)
    return {binary: path for binary, path in paths.items() if path is not None}


def ensure_debian_file(path: str, package: str) -> str:
    """`path` (a program outside PATH, such as /lib/systemd/...), apt-installing
    `package` when it is missing; fails the test when that is impossible."""
    if not os.path.exists(path):
        _apt_install([package])
    if not os.path.exists(path):
        pytest.fail(f"installed {package} but {path} is still missing", pytrace=False)
    return path


#: Test processes running in parallel (pytest-xdist) install one at a time: dpkg has
#: its own lock, but a second apt-get fails on it instead of waiting.
APT_LOCK = "/tmp/market-agent-tests-apt.lock"
#: apt-get update and install over a slow mirror: generous, but never forever.
APT_TIMEOUT = 900


def _apt_install(packages: list[str]) -> None:
    if shutil.which("apt-get") is None:
        pytest.fail(f"need Debian packages {packages} but apt-get is not available", pytrace=False)
    with open(APT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _apt_install_locked(packages)


def _apt_install_locked(packages: list[str]) -> None:
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    result = _run(install)
    if result.returncode != 0:
        _run(["apt-get", "update"])
        result = _run(install)
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(install)}` failed (exit {result.returncode}; root is needed):\n"
            f"{result.stdout[-2000:]}",
            pytrace=False,
        )


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=APT_TIMEOUT,
    )
