"""One exception hierarchy and the documented process exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes are a contract: scripts and CI smoke checks rely on them."""

    OK = 0
    #: `analyze --fail-on` threshold met; `status`: something is degraded or down.
    ALERT = 1
    #: Bad usage, configuration or input.
    USAGE = 2
    #: The audit log could not be written or read.
    AUDIT = 3
    #: A remote service failed (an endpoint unreachable when it was required).
    SERVICE = 4
    #: `restart`: refused (no approval) or blocked by a guard.
    BLOCKED = 5
    #: `restart`: the action failed verification and was rolled back.
    ROLLED_BACK = 6
    #: `restart`: the action failed and could not be rolled back; escalated.
    ACTION_FAILED = 7
    #: `history verify`: the hash chain is broken.
    TAMPERED = 8
    #: An unexpected internal error (a bug): please report it with --debug output.
    INTERNAL = 70
    #: Interrupted by the user (Ctrl-C).
    INTERRUPTED = 130


class MarketAgentError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(MarketAgentError):
    exit_code = ExitCode.USAGE


class InputError(MarketAgentError):
    """A payload could not be read or does not have the expected shape."""

    exit_code = ExitCode.USAGE


class AuditError(MarketAgentError):
    exit_code = ExitCode.AUDIT


class ServiceError(MarketAgentError):
    exit_code = ExitCode.SERVICE
