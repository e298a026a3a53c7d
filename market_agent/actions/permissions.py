"""Which permission a plan's backend needs, and whether this process seems to have it.

`restart --dry-run` shows it. Each check is cheap and bounded (at most one `kubectl
auth can-i`, with a timeout, argv without a shell); when a check cannot tell, the
answer is "unknown", never an error. The answer does not change the exit code.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from market_agent.actions.backends import PASS_ENV, CommandStep, Plan, run_command

Has = Literal["yes", "no", "unknown"]
#: Where polkit reads rules (the first two on every distribution we know of).
POLKIT_RULE_DIRS = (Path("/etc/polkit-1/rules.d"), Path("/usr/share/polkit-1/rules.d"))
MANAGE_UNITS = "org.freedesktop.systemd1.manage-units"
DOCKER_SOCKET = Path("/var/run/docker.sock")
CAN_I_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Permission:
    """What `backend` needs (`needs`), whether it is there (`has`) and how we know."""

    role: str  # "action" or "rollback"
    backend: str
    needs: str
    has: Has
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "for": self.role,
            "backend": self.backend,
            "needs": self.needs,
            "has": self.has,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Host:
    """What the checks read from the machine; tests substitute their own."""

    euid: int
    user: str
    environ: Mapping[str, str]
    polkit_dirs: Sequence[Path] = POLKIT_RULE_DIRS

    @classmethod
    def current(cls) -> Host:
        euid = os.geteuid()
        try:
            user = pwd.getpwuid(euid).pw_name
        except KeyError:
            user = str(euid)
        return cls(euid, user, dict(os.environ))


def check_plans(
    plan: Plan | None, rollback: Plan | None, host: Host | None = None
) -> list[Permission]:
    """The permission checks for an action's plan and its rollback plan."""
    host = host or Host.current()
    roles = (("action", plan), ("rollback", rollback))
    return [check_plan(role, p, host) for role, p in roles if p is not None]


def check_plan(role: str, plan: Plan, host: Host) -> Permission:
    check = _CHECKS.get(plan.backend, _http)
    needs, has, detail = check(plan, host)
    return Permission(role, plan.backend, needs, has, detail)


Verdict = tuple[str, Has, str]


def _systemd(plan: Plan, host: Host) -> Verdict:
    argv = _argv(plan)
    unit = argv[-1]
    if "--user" in argv:
        return f"your own user manager (systemctl --user restart {unit})", "yes", "no privilege"
    needs = f"manage-units on {unit} (root, or a polkit rule)"
    if _which(argv[0], plan, host) is None:
        return needs, "no", f"{argv[0]} is not found or not executable"
    if host.euid == 0:
        return needs, "yes", "running as root"
    return needs, *_polkit_rule(unit, host)


def _polkit_rule(unit: str, host: Host) -> tuple[Has, str]:
    unreadable = []
    for directory in host.polkit_dirs:
        try:
            rules = sorted(directory.glob("*.rules"))
            for rule in rules:
                text = rule.read_text(encoding="utf-8", errors="replace")
                if MANAGE_UNITS in text and _quoted(unit, text) and _quoted(host.user, text):
                    return "yes", f"polkit rule {rule} names {unit} and user {host.user}"
        except OSError:
            unreadable.append(str(directory))
    if unreadable:
        where = ", ".join(unreadable)
        return "unknown", f"cannot read the polkit rules in {where} (only root can, usually)"
    return "no", (
        f"no polkit rule names {unit} and user {host.user}; install "
        "examples/polkit/50-market-agent.rules (README, 'Permission to restart')"
    )


def _quoted(name: str, text: str) -> bool:
    """`name` appears in `text` as a whole JavaScript string literal."""
    return re.search(rf"""(["']){re.escape(name)}\1""", text) is not None


def _docker(plan: Plan, host: Host) -> Verdict:
    needs = "read-write access to the Docker socket (the docker group: root-equivalent)"
    program = _argv(plan)[0]
    if _which(program, plan, host) is None:
        return needs, "no", f"{program} is not found or not executable"
    docker_host = _env(plan, host).get("DOCKER_HOST", "")
    if docker_host and not docker_host.startswith("unix://"):
        return needs, "unknown", f"DOCKER_HOST is {docker_host.split('://')[0]}://, not checked"
    socket = Path(docker_host.removeprefix("unix://")) if docker_host else DOCKER_SOCKET
    if not socket.exists():
        return needs, "no", f"{socket} does not exist (is Docker running?)"
    if os.access(socket, os.R_OK | os.W_OK):
        return needs, "yes", f"{socket} is writable by user {host.user}"
    return needs, "no", f"{socket} is not writable by user {host.user}"


def _kubernetes(plan: Plan, host: Host) -> Verdict:
    argv = _argv(plan)  # (*base, "rollout", "restart", target, "-n", namespace)
    base, target, namespace = argv[:-5], argv[-3], argv[-1]
    needs = f"patch (and get, list, watch) on {target} in namespace {namespace}"
    if _which(argv[0], plan, host) is None:
        return needs, "no", f"{argv[0]} is not found or not executable"
    ask = CommandStep((*base, "auth", "can-i", "patch", target, "-n", namespace), env=_extra(plan))
    outcome = run_command(ask, CAN_I_TIMEOUT)
    answer = outcome.output.strip().splitlines()[:1]
    said = f"`{ask.describe()}` said {answer[0]!r}" if answer else f"`{ask.describe()}` failed"
    if outcome.returncode == 0 and answer == ["yes"]:
        return needs, "yes", said
    if answer and answer[0].startswith("no"):
        return needs, "no", said
    return needs, "unknown", f"{said} ({outcome.detail})"


def _command(plan: Plan, host: Host) -> Verdict:
    argv = _argv(plan)
    program = argv[0]
    wraps = _WRAPPED.get(Path(program).name)
    if wraps is not None and "restart" in argv:  # e.g. the example's systemctl argv
        return wraps(plan, host)
    needs = f"permission to run {program} (and whatever it does)"
    found = _which(program, plan, host)
    if found is None:
        return needs, "no", f"{program} is not found or not executable"
    return needs, "yes", f"{found} is executable (what it needs in turn is not checked)"


def _http(plan: Plan, host: Host) -> Verdict:
    return "the endpoint accepts the request", "unknown", "not checked: a dry run sends nothing"


_CHECKS: dict[str, Callable[[Plan, Host], Verdict]] = {
    "systemd": _systemd,
    "docker": _docker,
    "kubernetes": _kubernetes,
    "command": _command,
}


#: A `command` whose program is one of these needs what that backend needs.
_WRAPPED: dict[str, Callable[[Plan, Host], Verdict]] = {"systemctl": _systemd, "docker": _docker}


def _argv(plan: Plan) -> tuple[str, ...]:
    step = plan.steps[0]
    assert isinstance(step, CommandStep)  # every backend but http runs argv
    return step.argv


def _extra(plan: Plan) -> dict[str, str]:
    step = plan.steps[0]
    return dict(step.env) if isinstance(step, CommandStep) else {}


def _env(plan: Plan, host: Host) -> dict[str, str]:
    """The environment the plan's commands get (see backends.run_command)."""
    return {k: host.environ[k] for k in PASS_ENV if k in host.environ} | _extra(plan)


def _which(program: str, plan: Plan, host: Host) -> str | None:
    step = plan.steps[0]
    cwd = step.cwd if isinstance(step, CommandStep) and step.cwd else None
    if "/" in program and cwd is not None:
        program = str(cwd / program)
    return shutil.which(program, path=_env(plan, host).get("PATH", os.defpath))
