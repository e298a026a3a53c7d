"""How an action is carried out: backends turn a spec into a plan of argv or HTTP steps.

Nothing here ever uses a shell. Placeholders come from a fixed set
(`market_agent.settings.PLACEHOLDERS`), and every substituted value must
match `SAFE_VALUE`: letters, digits and ``. _ : / @ -``, not starting with ``-``
(so a label value can be neither shell syntax nor a command-line option).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from market_agent.redact import redact_text
from market_agent.settings import PLACEHOLDER, BackendSpec

SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/@][A-Za-z0-9._:/@-]{0,252}")
#: Environment variables passed through to commands; everything else is dropped.
PASS_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "KUBECONFIG",
    "DOCKER_HOST",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
)
OUTPUT_TAIL_CHARS = 2000


class UnsafeParameter(ValueError):
    """A placeholder has no value, or its value is outside the safe character set."""


def check_value(name: str, value: str) -> str:
    if not SAFE_VALUE.fullmatch(value):
        raise UnsafeParameter(
            f"value of {{{name}}} {value[:60]!r} is not allowed "
            "(letters, digits and . _ : / @ - only, not starting with -)"
        )
    return value


def substitute(template: str, params: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders with checked values; raises `UnsafeParameter`."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise UnsafeParameter(f"no value for {{{name}}} (set it in the action's params)")
        return check_value(name, params[name])

    return PLACEHOLDER.sub(fill, template)


@dataclass(frozen=True, slots=True)
class CommandStep:
    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return shlex.join(self.argv)

    def to_json(self) -> dict[str, Any]:
        return {"type": "command", "argv": list(self.argv)}


@dataclass(frozen=True, slots=True)
class HttpStep:
    url: str
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token: str | None = field(default=None, repr=False)
    verify_tls: bool = True

    def describe(self) -> str:
        return f"POST {redact_text(self.url)}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "http", "method": "POST", "url": redact_text(self.url)}


Step = CommandStep | HttpStep


@dataclass(frozen=True, slots=True)
class Plan:
    """Exactly what will run, in order, within `timeout` seconds."""

    backend: str
    steps: tuple[Step, ...]
    timeout: float

    def describe(self) -> list[str]:
        return [step.describe() for step in self.steps]

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "timeout_s": self.timeout,
            "steps": [s.to_json() for s in self.steps],
        }


class Backend(Protocol):
    """Turns a spec and checked parameters into steps. Register new ones in BACKENDS."""

    name: str

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]: ...


class CommandBackend:
    name = "command"

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]:
        argv = tuple(substitute(arg, params) for arg in spec.argv)
        return (CommandStep(argv, spec.cwd, dict(spec.env)),)


class SystemdBackend:
    name = "systemd"

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]:
        unit = substitute(spec.unit or "", params)
        user = ("--user",) if spec.user else ()
        return (CommandStep(("systemctl", *user, "restart", "--", unit), env=dict(spec.env)),)


class DockerBackend:
    name = "docker"

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]:
        container = substitute(spec.container or "", params)
        return (CommandStep(("docker", "restart", "--", container), env=dict(spec.env)),)


class KubernetesBackend:
    name = "kubernetes"

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]:
        target = "deployment/" + substitute(spec.deployment or "", params)
        namespace = substitute(spec.namespace, params)
        base: tuple[str, ...] = ("kubectl",)
        if spec.kube_context:
            base += ("--context", check_value("kube_context", spec.kube_context))
        wait = f"--timeout={max(1, int(spec.timeout))}s"
        return (
            CommandStep((*base, "rollout", "restart", target, "-n", namespace), env=dict(spec.env)),
            CommandStep(
                (*base, "rollout", "status", target, "-n", namespace, wait), env=dict(spec.env)
            ),
        )


class HttpBackend:
    name = "http"

    def steps(self, spec: BackendSpec, params: Mapping[str, str]) -> tuple[Step, ...]:
        for name, value in params.items():
            check_value(name, value)
        token = spec.bearer_token.get_secret_value() if spec.bearer_token else None
        body = {"params": dict(params)}
        return (HttpStep(spec.url or "", body, dict(spec.headers), token, spec.verify_tls),)


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        CommandBackend(),
        SystemdBackend(),
        DockerBackend(),
        KubernetesBackend(),
        HttpBackend(),
    )
}


def build_plan(spec: BackendSpec, params: Mapping[str, str]) -> Plan:
    """The exact steps for `spec`; raises `UnsafeParameter` before anything runs."""
    steps = BACKENDS[spec.backend].steps(spec, params)
    return Plan(spec.backend, steps, spec.timeout)


# Running ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    ok: bool
    detail: str
    duration_ms: float
    returncode: int | None = None
    output: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "ok": self.ok,
            "detail": self.detail,
            "duration_ms": self.duration_ms,
            "returncode": self.returncode,
            "output": self.output,
        }


@dataclass(frozen=True, slots=True)
class PlanResult:
    ok: bool
    detail: str
    steps: tuple[StepResult, ...]
    duration_ms: float


def run_plan(plan: Plan, *, extra_body: Mapping[str, Any] | None = None) -> PlanResult:
    """Run the steps in order within the plan's timeout; stop at the first failure."""
    started = time.monotonic()
    deadline = started + plan.timeout
    results: list[StepResult] = []
    for step in plan.steps:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result = StepResult(step.describe(), False, f"timed out after {plan.timeout:g} s", 0.0)
        elif isinstance(step, CommandStep):
            result = run_command(step, remaining)
        else:
            result = run_http(step, remaining, extra_body or {})
        results.append(result)
        if not result.ok:
            break
    elapsed = _ms(started)
    last = results[-1] if results else None
    ok = last is not None and last.ok
    detail = "all steps succeeded" if ok else (last.detail if last else "no steps")
    return PlanResult(ok, detail, tuple(results), elapsed)


def run_command(step: CommandStep, timeout: float) -> StepResult:
    """Run one argv without a shell, in its own process group, output to a temp file."""
    started = time.monotonic()
    name = step.describe()
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ} | dict(step.env)
    # Output goes to a file, not a pipe: a daemon the command starts may keep a pipe open.
    with tempfile.TemporaryFile() as out:
        try:
            process = subprocess.Popen(
                list(step.argv),
                shell=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=step.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            detail = f"cannot run {step.argv[0]!r}: {exc.strerror or exc}"
            return StepResult(name, False, detail, _ms(started))
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            detail = f"timed out after {timeout:.3g} s (killed)"
            return StepResult(name, False, detail, _ms(started), None, _tail(out))
        ok = code == 0
        detail = "exit 0" if ok else f"exit {code}"
        return StepResult(name, ok, detail, _ms(started), code, _tail(out))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(handle: Any) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - OUTPUT_TAIL_CHARS * 2))
    text = handle.read().decode("utf-8", "replace")[-OUTPUT_TAIL_CHARS:]
    return redact_text(text)


def run_http(step: HttpStep, timeout: float, extra_body: Mapping[str, Any]) -> StepResult:
    import httpx

    started = time.monotonic()
    headers = dict(step.headers)
    if step.bearer_token:
        headers["Authorization"] = f"Bearer {step.bearer_token}"
    body = {**extra_body, **step.body}
    try:
        response = httpx.post(
            step.url, json=body, headers=headers, timeout=timeout, verify=step.verify_tls
        )
    except httpx.TimeoutException:
        return StepResult(step.describe(), False, f"timed out after {timeout:.3g} s", _ms(started))
    except httpx.HTTPError as exc:
        detail = f"request failed: {type(exc).__name__}"
        return StepResult(step.describe(), False, detail, _ms(started))
    ok = response.is_success
    output = redact_text(response.text[:OUTPUT_TAIL_CHARS])
    return StepResult(
        step.describe(), ok, f"HTTP {response.status_code}", _ms(started), None, output
    )


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
