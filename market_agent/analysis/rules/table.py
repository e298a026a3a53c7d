"""The rule table: its schema, its compiled form, and loading it.

`rules.toml` (beside this module) and the user's `[[analysis.rules]]` entries are
validated by the pydantic models below; the first problem becomes a one-line
`ConfigError` naming the rule, the key and what is wrong. The compiled
`RuleTable` holds what the analyzer reads on every alert.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from market_agent.analysis.rules import wording
from market_agent.analysis.rules.matcher import (
    ALL_FIELDS,
    FIELDS,
    WILDCARD,
    Element,
    Elements,
    FieldName,
    Matcher,
    phrase_elements,
    remember,
)
from market_agent.analysis.rules.scoring import INFO, TYPE_INDEX, TYPES, score
from market_agent.analysis.severity import parse_severity_map, shipped_rules
from market_agent.errors import ConfigError
from market_agent.models import Alert, IssueType, Severity

__all__ = [
    "Clearance",
    "LogSignature",
    "Rule",
    "RuleSpec",
    "RuleTable",
    "Thresholds",
    "load_rule_table",
]

# ------------------------------------------------------------------- schema

_SCHEMA = ConfigDict(strict=True, extra="forbid", frozen=True)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("non_empty", "must not be empty")
    return value


# Lists may be given as tuples by code; TOML gives lists. Enums are given as their values.
_Strings = Annotated[list[StrictStr], Field(strict=False)]
_NonEmpty = Annotated[StrictStr, AfterValidator(_non_empty)]
_Type = Annotated[IssueType, Field(strict=False)]
_Metric = Literal["up", "error_ratio", "p95_latency_seconds", "feed_lag_seconds", "accuracy"]


class Clearance(BaseModel):
    """A live metric value that says an alert's condition has already cleared."""

    model_config = _SCHEMA

    metric: _Metric
    below: FiniteFloat | None = None
    at_least: FiniteFloat | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Clearance:
        if (self.below is None) == (self.at_least is None):
            raise ValueError("needs exactly one of below, at_least")
        return self

    def cleared(self, value: float) -> bool:
        if self.below is not None:
            return value < self.below
        return self.at_least is not None and value >= self.at_least


class Thresholds(BaseModel):
    """Limits applied to the live context (`[context]` in rules.toml)."""

    model_config = _SCHEMA

    feed_lag_stale_seconds: FiniteFloat = 300.0
    accuracy_floor: FiniteFloat = 0.7
    restart_history_window: StrictInt = 5
    restart_failures_to_escalate: StrictInt = 3


def _regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return patterns


class RuleSpec(BaseModel):
    """One `[[rules]]` entry (see `rules.toml` for the meaning of each key)."""

    model_config = _SCHEMA

    id: _NonEmpty
    issue_type: _Type
    weight: FiniteFloat = 1.0
    keywords: _Strings = []
    phrases: _Strings = []
    patterns: _Strings = []
    fields: Annotated[list[FieldName], Field(strict=False)] | None = None
    labels: Annotated[dict[StrictStr, StrictStr], Field(strict=False)] = {}
    no_restart: StrictBool = False
    severity: Annotated[Severity, Field(strict=False)] | None = None
    proposed_action: _NonEmpty | None = None
    recommended_actions: _Strings = []
    clears_when: Clearance | None = None

    @field_validator("keywords", "phrases")
    @classmethod
    def _has_words(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            elements = phrase_elements(entry)
            if all(element == WILDCARD for element in elements):
                raise ValueError(f"{entry!r} has no word to match")
            if elements[0] == WILDCARD:
                raise ValueError(f"{entry!r} must not start with '*'")
        return entries

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        return _regexes(patterns)

    @model_validator(mode="after")
    def _matches_something(self) -> RuleSpec:
        if not (self.keywords or self.phrases or self.patterns or self.labels):
            raise ValueError("needs at least one of keywords, phrases, patterns, labels")
        return self

    def compile(self, *, user: bool = False) -> Rule:
        """The rule as the matcher uses it; multi-word keywords become phrases."""
        keywords: list[Element] = []
        phrases: list[Elements] = []
        for entry in (*self.keywords, *self.phrases):
            elements = tuple(phrase_elements(entry))
            if len(elements) == 1:
                keywords.append(elements[0])
            else:
                phrases.append(elements)
        fields = ALL_FIELDS if self.fields is None else _field_mask(self.fields)
        return Rule(
            id=self.id,
            issue_type=self.issue_type,
            weight=self.weight,
            keywords=tuple(keywords),
            phrases=tuple(phrases),
            patterns=tuple(map(re.compile, self.patterns)),
            fields=fields,
            labels=tuple(self.labels.items()),
            no_restart=self.no_restart,
            severity=self.severity,
            proposed_action=self.proposed_action,
            recommended_actions=tuple(self.recommended_actions),
            clears_when=self.clears_when,
            user=user,
        )


class LogSignatureSpec(BaseModel):
    """One `[[log_signatures]]` entry (see `rules.toml`)."""

    model_config = _SCHEMA

    id: _NonEmpty
    issue_type: _Type
    summary: _NonEmpty
    patterns: Annotated[list[StrictStr], Field(strict=False, min_length=1)]
    min_count: StrictInt = Field(default=1, ge=1)
    applies_to: list[_Type] = []
    explains_outage: StrictBool = False
    no_restart: StrictBool = False
    severity: Annotated[Severity, Field(strict=False)] | None = None
    proposed_action: _NonEmpty | None = None
    recommended_actions: _Strings = []

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        return _regexes(patterns)

    def compile(self) -> LogSignature:
        return LogSignature(
            id=self.id,
            issue_type=self.issue_type,
            summary=self.summary,
            patterns=tuple(re.compile(p) for p in self.patterns),
            min_count=self.min_count,
            applies_to=frozenset(self.applies_to),
            explains_outage=self.explains_outage,
            no_restart=self.no_restart,
            severity=self.severity,
            proposed_action=self.proposed_action,
            recommended_actions=tuple(self.recommended_actions),
        )


class _Settings(BaseModel):
    model_config = _SCHEMA

    field_weights: dict[FieldName, FiniteFloat] = {}
    min_score: FiniteFloat = 0.35
    semantic_labels: _Strings = []
    tie_order: list[_Type] = []


class _RuleFile(BaseModel):
    """The whole of rules.toml."""

    model_config = _SCHEMA

    version: Literal[1]
    settings: _Settings = _Settings()
    severity: dict[StrictStr, _Strings] = {}
    context: Thresholds = Thresholds()
    rules: list[RuleSpec] = []
    log_signatures: list[LogSignatureSpec] = []
    actions: dict[StrictStr, dict[StrictStr, _Strings]] = {}


def _field_mask(names: Iterable[FieldName]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << FIELDS.index(name)
    return mask


# ------------------------------------------------------------ compiled form


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled entry of the rule table."""

    id: str
    issue_type: IssueType
    weight: float = 1.0
    keywords: Elements = ()
    phrases: tuple[Elements, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    fields: int = ALL_FIELDS  # bit mask over matcher.FIELDS
    labels: tuple[tuple[str, str], ...] = ()
    no_restart: bool = False
    severity: Severity | None = None
    proposed_action: str | None = None
    recommended_actions: tuple[str, ...] = ()
    clears_when: Clearance | None = None
    user: bool = False


@dataclass(frozen=True, slots=True)
class LogSignature:
    """A compiled `[[log_signatures]]` entry: evidence read from the log summary."""

    id: str
    issue_type: IssueType
    summary: str
    patterns: tuple[re.Pattern[str], ...]
    min_count: int = 1
    #: Issue types it may change (empty: any).
    applies_to: frozenset[IssueType] = frozenset()
    #: It can explain a predictor that does not answer (out of memory, disk full).
    explains_outage: bool = False
    no_restart: bool = False
    severity: Severity | None = None
    proposed_action: str | None = None
    recommended_actions: tuple[str, ...] = ()

    @property
    def situation(self) -> str:
        """Its key among `[actions.situations]` (its recommended steps)."""
        return "log:" + self.id


@dataclass(frozen=True, slots=True)
class RuleTable:
    """The compiled rule table: rules, severity map, thresholds and action texts."""

    rules: tuple[Rule, ...]
    severity_map: Mapping[str, Severity]
    field_weights: tuple[float, ...]
    min_score: float
    semantic_labels: tuple[str, ...]
    tie_order: tuple[IssueType, ...]
    thresholds: Thresholds
    actions: Mapping[str, Mapping[str, tuple[str, ...]]]
    log_signatures: tuple[LogSignature, ...] = ()
    matcher: Matcher = field(init=False, repr=False, compare=False)
    #: Sum of field weights for every field mask.
    mask_weights: tuple[float, ...] = field(init=False, repr=False, compare=False)
    #: Type indexes in tie-break order (`unknown` excluded: it never wins on score).
    vote_order: tuple[int, ...] = field(init=False, repr=False, compare=False)
    #: Per rule: (issue type index, weight, is a user rule, no_restart), for the hot path.
    votes: tuple[tuple[int, float, bool, bool], ...] = field(init=False, repr=False, compare=False)
    has_user_rules: bool = field(init=False, repr=False, compare=False)
    #: Picks the scores of `vote_order` out of all per-type scores, in that order.
    tie_scores: Callable[[Sequence[float]], tuple[float, ...]] = field(
        init=False, repr=False, compare=False
    )
    #: Per (managed, issue type): the step texts of the issue type, then of `unknown`.
    type_steps: Mapping[tuple[bool, IssueType], tuple[str, ...]] = field(
        init=False, repr=False, compare=False
    )
    #: Indexes of the rules with `recommended_actions`.
    rules_with_steps: frozenset[int] = field(init=False, repr=False, compare=False)
    #: Memo of `severity_of`: severity label values are few.
    severities: dict[str, Severity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        weights = self.field_weights
        sums = tuple(
            sum(w for i, w in enumerate(weights) if m >> i & 1) for m in range(ALL_FIELDS + 1)
        )
        order = [t for t in self.tie_order if t is not IssueType.UNKNOWN]
        order += [t for t in TYPES if t not in order and t is not IssueType.UNKNOWN]
        matcher = Matcher(self.rules, self.semantic_labels, functools.partial(score, self))
        self._derive("matcher", matcher)
        self._derive("mask_weights", sums)
        self._derive("vote_order", tuple(TYPE_INDEX[t] for t in order))
        votes = tuple(
            (TYPE_INDEX[r.issue_type], r.weight, r.user, r.no_restart) for r in self.rules
        )
        self._derive("votes", votes)
        self._derive("has_user_rules", any(r.user for r in self.rules))
        self._derive("tie_scores", itemgetter(*self.vote_order))
        self._derive("type_steps", wording.steps_by_type(self.actions))
        steps = frozenset(r for r, rule in enumerate(self.rules) if rule.recommended_actions)
        self._derive("rules_with_steps", steps)
        self._derive("severities", {})

    def _derive(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass sets its own fields so

    def severity_of(self, alert: Alert) -> Severity:
        """The alert's `severity` label mapped case-insensitively; unknown is info."""
        label = alert.labels.get("severity")
        if not label:
            return INFO
        found = self.severities.get(label)
        if found is None:
            found = self.severity_map.get(label.strip().lower(), INFO)
            remember(self.severities, label, found)
        return found


# ------------------------------------------------------------------- loading


def load_rule_table(extra_rules: Sequence[Mapping[str, Any]] = ()) -> RuleTable:
    """The built-in rule table, with the user's `[[analysis.rules]]` entries added.

    A user rule replaces the built-in rule of the same id, and when any user rule
    matches an alert, user rules alone decide its issue type. Raises `ConfigError`
    with a one-line message naming the bad rule and key.
    """
    if not extra_rules:
        return _builtin_table()
    base = _builtin_table()
    user = [
        _user_rule(raw, f"analysis.rules[{i}]").compile(user=True)
        for i, raw in enumerate(extra_rules)
    ]
    _check_unique(user, "analysis.rules")
    user_ids = {rule.id for rule in user}
    kept = tuple(rule for rule in base.rules if rule.id not in user_ids)
    return dataclasses.replace(base, rules=tuple(user) + kept)


@functools.cache
def _builtin_table() -> RuleTable:
    try:
        data = shipped_rules()
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - shipped file
        raise ConfigError(f"built-in rules.toml is not valid TOML: {exc}") from exc
    return _table_from_data(data)


def _table_from_data(data: Mapping[str, Any]) -> RuleTable:
    try:
        spec = _RuleFile.model_validate(data)
    except ValidationError as exc:
        raise _file_error(exc, data) from None
    rules = [rule.compile() for rule in spec.rules]
    _check_unique(rules, "rules.toml")
    signatures = tuple(entry.compile() for entry in spec.log_signatures)
    _check_unique(signatures, "rules.toml log_signatures")
    actions = {
        group: {key: tuple(steps) for key, steps in texts.items()}
        for group, texts in spec.actions.items()
    }
    situations = actions.setdefault("situations", {})
    situations.update({s.situation: s.recommended_actions for s in signatures})
    settings = spec.settings
    return RuleTable(
        rules=tuple(rules),
        severity_map=_severity_map(spec.severity),
        field_weights=tuple(settings.field_weights.get(name, 0.0) for name in FIELDS),
        min_score=settings.min_score,
        semantic_labels=tuple(settings.semantic_labels),
        tie_order=tuple(settings.tie_order),
        thresholds=spec.context,
        actions=actions,
        log_signatures=signatures,
    )


def _user_rule(raw: Any, where: str) -> RuleSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    try:
        return RuleSpec.model_validate(dict(raw))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise ConfigError(_one_line(_named(where, raw), error["loc"], error)) from None


def _file_error(exc: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    if len(loc) >= 2 and loc[0] in ("rules", "log_signatures") and isinstance(loc[1], int):
        where = _named(f"rules.toml {loc[0]}[{loc[1]}]", data[loc[0]][loc[1]])
        return ConfigError(_one_line(where, loc[2:], error))
    return ConfigError(_one_line("rules.toml", loc, error))


def _named(where: str, raw: Any) -> str:
    """`where`, with the rule's id when it has a usable one."""
    rule_id = raw.get("id") if isinstance(raw, Mapping) else None
    return f"{where} (id {rule_id!r})" if isinstance(rule_id, str) and rule_id.strip() else where


#: What a pydantic error type means, said of a key.
_PROBLEMS = {
    "missing": "is required",
    "non_empty": "must not be empty",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "int_type": "must be a whole number",
    "finite_number": "must be a finite number",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}


def _one_line(where: str, loc: tuple[int | str, ...], error: ErrorDetails) -> str:
    """One pydantic error as `<where>: key '<key>' <what is wrong>`."""
    kind, value = error["type"], error.get("input")
    item = f" item {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[: -1 if item else None])
    subject = f"{where}: key {key.lstrip('.')!r}{item}" if loc else where
    if kind == "extra_forbidden":
        return f"{where}: unknown key {key.lstrip('.')!r}"
    if kind in ("enum", "literal_error"):
        expected = error.get("ctx", {}).get("expected", "")
        return f"{subject} is {_shown(value)}, expected one of {expected}"
    if kind == "value_error":
        return f"{subject}: {error.get('ctx', {}).get('error', error['msg'])}"
    if kind in _PROBLEMS:
        given = f" (got {_shown(value)})" if isinstance(value, str | int | float) else ""
        return f"{subject} {_PROBLEMS[kind]}{given}"
    return f"{subject}: {error['msg']}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _severity_map(raw: Mapping[str, Any]) -> dict[str, Severity]:
    try:
        return parse_severity_map(raw)
    except ValueError as exc:  # pragma: no cover - shipped file
        raise ConfigError(str(exc)) from None


def _check_unique(rules: Iterable[Rule | LogSignature], where: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ConfigError(f"{where}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
