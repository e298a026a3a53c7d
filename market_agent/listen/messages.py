"""The messages between `listen` and its analysis process, one frozen dataclass per kind.

    listener -> child     Hello(version, spec)        first, once
    child    -> listener  Ready(version, pid) | Failed(reason)
    listener -> child     Jobs(generation, items)
    child    -> listener  BatchRecords(batch_id, ids, records, observations, failures)
    listener -> child     Answer(generation, batch_id, committed)
    listener -> child     Stop(generation)

The handshake carries `PROTOCOL_VERSION` both ways and each side checks the other's:
the analysis process is a new interpreter that imports market-agent from disk, so one
restarted after an upgrade may not speak the listener's protocol. A mismatch, an
unknown message or one that cannot be read is a `ProtocolError` with a clear reason,
never a silent hang.

On the wire a message is a tuple of its tag and its fields (`encode`; `decode` is
its inverse and the one place that rejects what is not a message): pickling the
dataclasses themselves costs ~15 µs more per message (pickle imports the class's
module on both sides), on a path that carries thousands of notifications a second.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, ClassVar

from market_agent.errors import ConfigError

if TYPE_CHECKING:
    from market_agent.settings import Settings

#: Bump on any change to a message's fields or meaning.
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class EngineSpec:
    """What the analysis process builds its service, context and remediator from."""

    settings: Settings
    use_llm: bool = True

    @property
    def workers(self) -> int:
        return self.settings.listen.workers


class ProtocolError(ConfigError):
    """The listener and its analysis process do not understand each other (at start,
    `listen` exits with it as with a configuration error)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The listener's first message: its protocol and what to build the engine from."""

    TAG: ClassVar[str] = "hello"
    version: int
    spec: EngineSpec


@dataclass(frozen=True, slots=True)
class Ready:
    """The analysis process built its engine; jobs can come."""

    TAG: ClassVar[str] = "ready"
    version: int
    pid: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The analysis process cannot start, and why (its last message)."""

    TAG: ClassVar[str] = "failed"
    reason: str


@dataclass(frozen=True, slots=True)
class Jobs:
    """Notifications to analyse, as (notification id, payload JSON)."""

    TAG: ClassVar[str] = "jobs"
    generation: int
    items: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class BatchRecords:
    """A worker batch to journal: its notifications, records as (kind, canonical parts),
    observations as (analyzer, severity, LLM latency) and its failure count."""

    TAG: ClassVar[str] = "batch"
    batch_id: int
    ids: Sequence[str]
    records: Sequence[tuple[str, tuple[str, str, str]]]
    observations: Sequence[tuple[str, str, float | None]]
    failures: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Whether a batch's records are on disk (its analyses may then be acted on)."""

    TAG: ClassVar[str] = "answer"
    generation: int
    batch_id: int
    committed: bool


@dataclass(frozen=True, slots=True)
class Stop:
    """Take no more jobs, finish the batches in hand, exit."""

    TAG: ClassVar[str] = "stop"
    generation: int


ToChild = Hello | Jobs | Answer | Stop
ToListener = Ready | Failed | BatchRecords
Message = ToChild | ToListener

_KINDS: dict[str, type[Message]] = {
    kind.TAG: kind for kind in (Hello, Ready, Failed, Jobs, BatchRecords, Answer, Stop)
}


def _field_getter(kind: type[Message]) -> Callable[[Message], tuple[object, ...]]:
    names = [field.name for field in dataclasses.fields(kind)]
    if len(names) == 1:
        return lambda message: (getattr(message, names[0]),)
    return operator.attrgetter(*names)


_FIELDS = {kind: _field_getter(kind) for kind in _KINDS.values()}


def encode(message: Message) -> tuple[object, ...]:
    return (message.TAG, *_FIELDS[type(message)](message))


def decode(raw: object) -> Message:
    """The message `raw` encodes; ProtocolError for anything that is not one."""
    if not (isinstance(raw, tuple) and raw and isinstance(raw[0], str)):
        raise ProtocolError(f"not a message of the analysis protocol: {type(raw).__name__}")
    kind = _KINDS.get(raw[0])
    if kind is None:
        raise ProtocolError(f"unknown message {raw[0][:40]!r} in the analysis protocol")
    try:
        return kind(*raw[1:])
    except TypeError:
        fields = len(kind.__match_args__)
        raise ProtocolError(
            f"malformed {kind.TAG!r} message: {len(raw) - 1} values, {fields} expected"
        ) from None


def send(conn: Connection, message: Message) -> None:
    conn.send(encode(message))


def receive(conn: Connection) -> Message:
    """The next message; EOFError or OSError once the other side is gone."""
    try:
        raw = conn.recv()
    except (EOFError, OSError):
        raise
    except Exception as exc:  # pickle names a class or module this side lacks
        raise ProtocolError(f"unreadable message: {type(exc).__name__}: {exc}") from None
    return decode(raw)


def check_version(listener: int, analysis: int) -> None:
    if listener != analysis:
        raise ProtocolError(
            f"protocol version mismatch: the listener speaks version {listener}, its "
            f"analysis process version {analysis} (both must come from one installation "
            "of market-agent: restart listen after an upgrade)"
        )
