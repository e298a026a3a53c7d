"""The deterministic rule analyzer: the embedded default, always available.

Each firing alert is cut into fields (alertname words, summary, description,
PromQL expression, semantic labels) and scored with the weighted keyword, phrase
and regex rules of `rules.toml` (the schema is documented there). The `severity`
label is mapped, and then the optional live context about the managed service
(reachability, current metrics, how well restarts worked before) may raise the
severity, reclassify the issue or lower the confidence.

Multi-alert groups: each firing alert is scored on its own and the group's
issue type comes from the per-alert scores averaged with weights 1 + severity
rank (info 1 ... critical 5): the most severe alerts count most, but every alert
adds evidence.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from operator import itemgetter
from typing import Any
from urllib.parse import unquote_plus

from market_agent.analysis.base import Judgement
from market_agent.analysis.severity import parse_severity_map
from market_agent.errors import ConfigError
from market_agent.models import Alert, IssueType, Notification, Severity, Verdict

__all__ = ["RuleAnalyzer", "RuleTable", "load_rule_table"]

#: Where a rule can match, in the order of their bits in a field mask.
FIELDS = ("name", "summary", "description", "expr", "labels")
_NAME, _SUMMARY, _DESCRIPTION, _EXPR, _LABELS = range(len(FIELDS))
_ALL_FIELDS = (1 << len(FIELDS)) - 1
_TYPES = tuple(IssueType)
_TYPE_INDEX = {issue_type: i for i, issue_type in enumerate(_TYPES)}
# Enum members for the hot path: reading a module constant is ~10x quicker than
# `IssueType.AVAILABILITY`, a descriptor look-up in Python 3.11.
_AVAILABILITY, _UNKNOWN = IssueType.AVAILABILITY, IssueType.UNKNOWN
_CRITICAL, _HIGH, _INFO = Severity.CRITICAL, Severity.HIGH, Severity.INFO
_METRICS = ("up", "error_ratio", "p95_latency_seconds", "feed_lag_seconds", "accuracy")
_RULE_KEYS = frozenset(
    {
        "id",
        "issue_type",
        "weight",
        "keywords",
        "phrases",
        "patterns",
        "fields",
        "labels",
        "no_restart",
        "severity",
        "proposed_action",
        "recommended_actions",
        "clears_when",
    }
)
#: Issue types a stale market-data feed explains better than the alert text.
_FEED_EXPLAINS = frozenset(
    {IssueType.DATA, IssueType.ERRORS, IssueType.PERFORMANCE, IssueType.UNKNOWN}
)

_WORD = re.compile(r"[a-z0-9]+")
#: A `bytes.translate` table for ASCII text: lower-case it, and cut it into `_WORD`s
#: (every other character becomes a space).
_LOWER_WORDS = bytes(
    ord(low) if _WORD.fullmatch(low := chr(c).lower()) and c < 128 else 32 for c in range(256)
)
# The first two alternatives never match at the same place; the common one goes first.
_NAME_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?=[A-Z][a-z])|[A-Z]+|[0-9]+[a-z]*")
_EXPR_PARAM = re.compile(r"[?&]g0\.expr=([^&]*)")
_SPACES = re.compile(r"\s+")
_WILDCARD = ("", True)  # "*" as a whole word: any one word
_MEMO_SIZE = 20_000  # entries per memo: alert text is open-ended

_Element = tuple[str, bool]  # (word, is_prefix)
_Elements = tuple[_Element, ...]
# Per-type scores, rule -> contribution, bit set of the types the alertname supports,
# and whether no matched rule argues against a restart.
_Votes = tuple[tuple[float, ...], dict[int, float], int, bool]


# --------------------------------------------------------------------- table


@dataclass(frozen=True, slots=True)
class Clearance:
    """A live metric value that says an alert's condition has already cleared."""

    metric: str
    below: float | None = None
    at_least: float | None = None

    def cleared(self, value: float) -> bool:
        if self.below is not None:
            return value < self.below
        return self.at_least is not None and value >= self.at_least


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of the rule table (see `rules.toml` for the meaning of each key)."""

    id: str
    issue_type: IssueType
    weight: float = 1.0
    keywords: _Elements = ()
    phrases: tuple[_Elements, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    fields: int = _ALL_FIELDS
    labels: tuple[tuple[str, str], ...] = ()
    no_restart: bool = False
    severity: Severity | None = None
    proposed_action: str | None = None
    recommended_actions: tuple[str, ...] = ()
    clears_when: Clearance | None = None
    user: bool = False


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits applied to the live context (`[context]` in rules.toml)."""

    feed_lag_stale_seconds: float = 300.0
    accuracy_floor: float = 0.7
    restart_history_window: int = 5
    restart_failures_to_escalate: int = 3


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
    matcher: _Matcher = field(init=False, repr=False, compare=False)
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
            sum(w for i, w in enumerate(weights) if m >> i & 1) for m in range(_ALL_FIELDS + 1)
        )
        order = [t for t in self.tie_order if t is not IssueType.UNKNOWN]
        order += [t for t in _TYPES if t not in order and t is not IssueType.UNKNOWN]
        object.__setattr__(self, "matcher", _Matcher(self))
        object.__setattr__(self, "mask_weights", sums)
        object.__setattr__(self, "vote_order", tuple(_TYPE_INDEX[t] for t in order))
        votes = tuple(
            (_TYPE_INDEX[r.issue_type], r.weight, r.user, r.no_restart) for r in self.rules
        )
        object.__setattr__(self, "votes", votes)
        object.__setattr__(self, "has_user_rules", any(r.user for r in self.rules))
        object.__setattr__(self, "tie_scores", itemgetter(*self.vote_order))
        generic, managed = self.actions.get("generic", {}), self.actions.get("managed", {})
        type_steps = {
            (is_managed, t): _unique(
                [*(managed if is_managed else generic).get(t, ()), *generic.get("unknown", ())]
            )
            for is_managed in (False, True)
            for t in _TYPES
        }
        object.__setattr__(self, "type_steps", type_steps)
        steps = frozenset(r for r, rule in enumerate(self.rules) if rule.recommended_actions)
        object.__setattr__(self, "rules_with_steps", steps)
        object.__setattr__(self, "severities", {})

    def severity_of(self, alert: Alert) -> Severity:
        """The alert's `severity` label mapped case-insensitively; unknown is info."""
        label = alert.labels.get("severity")
        if not label:
            return _INFO
        found = self.severities.get(label)
        if found is None:
            found = self.severity_map.get(label.strip().lower(), _INFO)
            _remember(self.severities, label, found)
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
        _parse_rule(raw, f"analysis.rules[{i}]", user=True) for i, raw in enumerate(extra_rules)
    ]
    _check_unique(user, "analysis.rules")
    user_ids = {rule.id for rule in user}
    kept = tuple(rule for rule in base.rules if rule.id not in user_ids)
    return dataclasses.replace(base, rules=tuple(user) + kept)


@functools.cache
def _builtin_table() -> RuleTable:
    text = resources.files("market_agent.analysis").joinpath("rules.toml").read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - shipped file
        raise ConfigError(f"built-in rules.toml is not valid TOML: {exc}") from exc
    return _table_from_data(data)


def _table_from_data(data: Mapping[str, Any]) -> RuleTable:
    where = "rules.toml"
    settings = _table(data.get("settings", {}), f"{where} [settings]")
    rules = [_parse_rule(raw, f"{where} rules[{i}]") for i, raw in enumerate(data.get("rules", []))]
    _check_unique(rules, where)
    weights = _table(settings.get("field_weights", {}), f"{where} settings.field_weights")
    return RuleTable(
        rules=tuple(rules),
        severity_map=_severity_map(_table(data.get("severity", {}), f"{where} [severity]")),
        field_weights=tuple(float(weights.get(name, 0.0)) for name in FIELDS),
        min_score=float(settings.get("min_score", 0.35)),
        semantic_labels=tuple(settings.get("semantic_labels", ())),
        tie_order=tuple(IssueType(t) for t in settings.get("tie_order", ())),
        thresholds=Thresholds(**_table(data.get("context", {}), f"{where} [context]")),
        actions={
            group: {key: tuple(steps) for key, steps in _table(texts, group).items()}
            for group, texts in _table(data.get("actions", {}), f"{where} [actions]").items()
        },
    )


def _severity_map(raw: Mapping[str, Any]) -> dict[str, Severity]:
    try:
        return parse_severity_map(raw)
    except ValueError as exc:  # pragma: no cover - shipped file
        raise ConfigError(str(exc)) from None


def _check_unique(rules: Iterable[Rule], where: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ConfigError(f"{where}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)


def _parse_rule(raw: Any, where: str, *, user: bool = False) -> Rule:
    raw = _table(raw, where)
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ConfigError(f"{where}: key 'id' must be a non-empty string")
    where = f"{where} (id {rule_id!r})"
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    keywords, phrases = _words(raw, where)
    rule = Rule(
        id=rule_id,
        issue_type=_choice(raw.get("issue_type"), IssueType, f"{where}: key 'issue_type'"),
        weight=_float(raw.get("weight", 1.0), f"{where}: key 'weight'"),
        keywords=keywords,
        phrases=phrases,
        patterns=_patterns(raw.get("patterns", []), where),
        fields=_fields(raw.get("fields"), where),
        labels=tuple(_str_table(raw.get("labels", {}), f"{where}: key 'labels'").items()),
        no_restart=_bool(raw.get("no_restart", False), f"{where}: key 'no_restart'"),
        severity=_optional_severity(raw.get("severity"), where),
        proposed_action=_optional_str(
            raw.get("proposed_action"), f"{where}: key 'proposed_action'"
        ),
        recommended_actions=tuple(
            _strings(raw.get("recommended_actions", []), f"{where}: key 'recommended_actions'")
        ),
        clears_when=_clearance(raw.get("clears_when"), where),
        user=user,
    )
    if not (rule.keywords or rule.phrases or rule.patterns or rule.labels):
        raise ConfigError(f"{where}: needs at least one of keywords, phrases, patterns, labels")
    return rule


def _words(raw: Mapping[str, Any], where: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Keywords and phrases, tokenised like alert text; multi-word keywords become phrases."""
    keywords: list[tuple[str, bool]] = []
    phrases: list[tuple[tuple[str, bool], ...]] = []
    for key in ("keywords", "phrases"):
        for entry in _strings(raw.get(key, []), f"{where}: key {key!r}"):
            elements = _phrase_elements(entry)
            if not elements or all(el == _WILDCARD for el in elements):
                raise ConfigError(f"{where}: key {key!r}: {entry!r} has no word to match")
            if elements[0] == _WILDCARD:
                raise ConfigError(f"{where}: key {key!r}: {entry!r} must not start with '*'")
            if len(elements) == 1:
                keywords.append(elements[0])
            else:
                phrases.append(tuple(elements))
    return tuple(keywords), tuple(phrases)


def _phrase_elements(entry: str) -> list[tuple[str, bool]]:
    elements: list[tuple[str, bool]] = []
    for piece in entry.lower().split():
        if piece == "*":
            elements.append(_WILDCARD)
            continue
        prefix = piece.endswith("*")
        words = _WORD.findall(piece)
        elements.extend((w, prefix and k == len(words) - 1) for k, w in enumerate(words))
    return elements


def _patterns(raw: Any, where: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in _strings(raw, f"{where}: key 'patterns'"):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{where}: key 'patterns': bad regex {pattern!r}: {exc}") from exc
    return tuple(compiled)


def _fields(raw: Any, where: str) -> int:
    if raw is None:
        return _ALL_FIELDS
    mask = 0
    for name in _strings(raw, f"{where}: key 'fields'"):
        if name not in FIELDS:
            raise ConfigError(f"{where}: key 'fields': {name!r} is not one of {', '.join(FIELDS)}")
        mask |= 1 << FIELDS.index(name)
    return mask


def _clearance(raw: Any, where: str) -> Clearance | None:
    if raw is None:
        return None
    raw = _table(raw, f"{where}: key 'clears_when'")
    metric = raw.get("metric")
    if metric not in _METRICS:
        raise ConfigError(f"{where}: key 'clears_when.metric' must be one of {', '.join(_METRICS)}")
    bounds = [k for k in ("below", "at_least") if k in raw]
    if len(bounds) != 1 or set(raw) - {"metric", "below", "at_least"}:
        raise ConfigError(f"{where}: key 'clears_when' needs metric and one of below, at_least")
    value = _float(raw[bounds[0]], f"{where}: key 'clears_when.{bounds[0]}'")
    return Clearance(metric, **{bounds[0]: value})


def _optional_severity(raw: Any, where: str) -> Severity | None:
    if raw is None:
        return None
    return _choice(raw, Severity, f"{where}: key 'severity'")


def _choice(raw: Any, enum: Any, what: str) -> Any:
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise ConfigError(f"{what} is {raw!r}, expected one of {allowed}") from None


def _table(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be a table")
    return raw


def _str_table(raw: Any, what: str) -> dict[str, str]:
    raw = _table(raw, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ConfigError(f"{what} must map label names to strings")
    return dict(raw)


def _strings(raw: Any, what: str) -> list[str]:
    if not isinstance(raw, list | tuple) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{what} must be a list of strings")
    return list(raw)


def _float(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(f"{what} must be a number")
    return float(raw)


def _bool(raw: Any, what: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{what} must be true or false")
    return raw


def _optional_str(raw: Any, what: str) -> str | None:
    if raw is not None and (not isinstance(raw, str) or not raw.strip()):
        raise ConfigError(f"{what} must be a non-empty string")
    return raw


# ------------------------------------------------------------------ matching


class _Node:
    """A node of a token trie holding keywords and phrases.

    Children are keyed by their element: exact words in `exact`, prefix elements in
    `prefixes` (a lone `*` is the empty prefix).
    """

    __slots__ = ("exact", "prefixes", "rules")

    def __init__(self) -> None:
        self.exact: dict[str, _Node] = {}
        self.prefixes: dict[str, _Node] = {}
        self.rules: list[int] = []  # rules whose keyword or phrase ends here

    def add(self, elements: _Elements, rule: int) -> None:
        node = self
        for word, prefix in elements:
            children = node.prefixes if prefix else node.exact
            if word not in children:
                children[word] = _Node()
            node = children[word]
        if rule not in node.rules:
            node.rules.append(rule)

    def children(self, word: str) -> list[_Node]:
        """The children that `word` leads to."""
        exact = self.exact.get(word)
        kids = [exact] if exact else []
        kids += [node for p, node in self.prefixes.items() if word.startswith(p)]
        return kids


class _State:
    """A state of the word automaton (`_Words`) run over a field's words.

    `nodes`: the trie nodes of the phrases in progress (the root is implicit: a
    keyword or phrase may start at any word); `hits`: bit set of the rules whose
    keyword or phrase ended with the word that led here. `next` memoises the
    transitions: the vocabulary is bounded, so once warm each word costs one dict
    look-up, however many prefix keywords and phrases the table has.
    """

    __slots__ = ("hits", "next", "nodes")

    def __init__(self, nodes: frozenset[_Node], hits: int) -> None:
        self.nodes = nodes
        self.hits = hits
        self.next: dict[str, _State] = {}


class _Words:
    """All keywords and phrases of the table as a word automaton.

    One automaton serves every field (each field then keeps the rules it allows):
    one memo of the vocabulary stays small and warm in the CPU caches.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.root = _Node()
        for r, rule in enumerate(rules):
            for element in rule.keywords:
                self.root.add((element,), r)
            for phrase in rule.phrases:
                self.root.add(phrase, r)
        self.start = _State(frozenset(), 0)
        self.states = {(self.start.nodes, self.start.hits): self.start}

    def scan(self, tokens: Iterable[str]) -> int:
        """Bit set of the rules with a keyword or phrase among `tokens` (uncached)."""
        found = 0
        state = self.start
        for word in tokens:
            try:  # (a subscript is quicker than .get(): this loop is the hottest)
                state = state.next[word]
            except KeyError:  # a transition not memoised yet
                state = self._advance(state, word)
            found |= state.hits
        return found

    def _advance(self, state: _State, word: str) -> _State:
        """Where `word` leads from `state` (and memoise it under this spelling)."""
        low = word.lower()
        kids = [kid for node in (self.root, *state.nodes) for kid in node.children(low)]
        hits = sum({1 << r for kid in kids for r in kid.rules})
        onward = frozenset(kid for kid in kids if kid.exact or kid.prefixes)
        following = self.states.get((onward, hits)) or self._state(onward, hits)
        _remember(state.next, word, following)
        return following

    def _state(self, nodes: frozenset[_Node], hits: int) -> _State:
        if len(self.states) >= _MEMO_SIZE:  # bounded, like every memo: start afresh
            self.states = {(self.start.nodes, self.start.hits): self.start}
            self.start.next.clear()
        state = self.states[nodes, hits] = _State(nodes, hits)
        return state


class _Patterns:
    """The regex patterns of the rules allowed in a field."""

    def __init__(self, rules: Sequence[Rule], allowed: Iterable[int]) -> None:
        self.patterns = [
            (pattern, _needed(pattern), r) for r in allowed for pattern in rules[r].patterns
        ]
        #: Everything the patterns need (one `in` test each): most texts have none of it.
        self.needed = tuple(sorted({s for _, needs, _ in self.patterns for s in needs}))

    def search(self, low: str, found: int) -> int:
        """`found` plus the rules whose patterns match the lower-cased text."""
        if any(map(low.__contains__, self.needed)):
            for pattern, needs, r in self.patterns:
                if found >> r & 1 or not any(map(low.__contains__, needs)):
                    continue
                if pattern.search(low):
                    found |= 1 << r
        return found


def _needed(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Strings one of which occurs in every text that `pattern` matches (("",) if unknown).

    An `in` test on them skips most searches, and a search is dear: a regex without
    a literal prefix (such as `\\babsent`) is tried at every position of the text.
    """
    if pattern.flags & re.IGNORECASE:
        return ("",)
    try:
        from re import _parser  # CPython's own regex parser (private: do without if it moves)

        needs = _literal_needs(_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # pragma: no cover - a Python without `re._parser`
        return ("",)
    best = _most_selective(needs) or ("",)
    # "up" or "_up": "up" alone says the same.
    return tuple(s for s in best if not any(o in s for o in best if o != s))


def _most_selective(needs: list[tuple[str, ...]]) -> tuple[str, ...]:
    return max(needs, key=lambda options: min(map(len, options)), default=())


def _literal_needs(items: Iterable[tuple[Any, Any]]) -> list[tuple[str, ...]]:
    """What a parsed regex sequence needs: tuples of strings, one of each must occur.

    Conservative: only literal runs that every match contains (not inside optional
    parts, lookarounds or groups with inline flags) count.
    """
    from re import _constants as sre

    needs: list[tuple[str, ...]] = []
    run: list[str] = []
    for op, arg in items:
        if op is sre.LITERAL:
            run.append(chr(arg))
            continue
        if run:
            needs.append(("".join(run),))
            run = []
        if op is sre.SUBPATTERN and not arg[1] and not arg[2]:
            needs += _literal_needs(arg[3])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and arg[0] >= 1:
            needs += _literal_needs(arg[2])
        elif op is sre.BRANCH:
            options = [_most_selective(_literal_needs(branch)) for branch in arg[1]]
            if all(options):
                needs.append(tuple(s for option in options for s in option))
    if run:
        needs.append(("".join(run),))
    return needs


class _Matcher:
    """Finds the rules that match each field of an alert.

    Results are memoised per word (in the automaton), per distinct alert name,
    expression and label text, and per distinct alert content (Alertmanager re-sends
    firing alerts). Every memo is bounded.
    """

    def __init__(self, table: RuleTable) -> None:
        rules = table.rules
        self.semantic_labels = table.semantic_labels
        self.words = _Words(rules)
        allowed = [
            [r for r, rule in enumerate(rules) if rule.fields >> i & 1] for i in range(len(FIELDS))
        ]
        #: Per field index: bit set of the rules allowed there (the `fields` key).
        self.allowed = tuple(sum(1 << r for r in field) for field in allowed)
        #: Per field index: the patterns of the rules allowed there, if any.
        self.patterns = tuple(
            _Patterns(rules, field) if any(rules[r].patterns for r in field) else None
            for field in allowed
        )
        self.gated = tuple((r, rule) for r, rule in enumerate(rules) if rule.labels)
        gate_keys = {key for _, rule in self.gated for key, _ in rule.labels}
        #: Labels that can change the result: part of the memo key of an alert.
        self.label_keys = tuple(self.semantic_labels) + tuple(sorted(gate_keys))
        self.alerts: dict[tuple[str | None, ...], _Votes] = {}
        #: Per field index: text -> bit set of the rules matching it. Not for summaries
        #: and descriptions: they mostly name the instance or quote the value, so
        #: they rarely repeat and a memo would cost more than it saves.
        self._texts: tuple[dict[str, int] | None, ...] = tuple(
            None if i in (_SUMMARY, _DESCRIPTION) else {} for i in range(len(FIELDS))
        )

    def forget_alerts(self) -> None:
        """Drop the per-alert and per-text memos (word memos stay): for benchmarks."""
        self.alerts.clear()
        for memo in self._texts:
            if memo is not None:
                memo.clear()

    def alert_masks(self, alert: Alert, name: str) -> dict[int, int]:
        """Rule index -> bit mask of the fields of `alert` (named `name`) where the rule matched."""
        masks: dict[int, int] = {}
        annotations, labels = alert.annotations, alert.labels
        self._field(_NAME, name, masks)
        if text := annotations.get("summary"):
            self._field(_SUMMARY, text, masks)
        if text := annotations.get("description"):
            self._field(_DESCRIPTION, text, masks)
        if "message" in annotations:
            self._field(_DESCRIPTION, annotations["message"], masks)
        if alert.generator_url:
            self._field(_EXPR, alert.generator_url, masks)
        if not labels.keys().isdisjoint(self.semantic_labels):  # rare: skip the join
            values = " ".join([labels[k] for k in self.semantic_labels if k in labels])
            if values:
                self._field(_LABELS, values, masks)
        if self.gated:
            self._gate(labels, masks)
        return masks

    def _field(self, index: int, text: str, masks: dict[int, int]) -> None:
        memo = self._texts[index]
        if memo is None:
            found = self._scan(index, text)
        elif (found := memo.get(text)) is None:
            found = _remember(memo, text, self._scan(index, text))
        bit = 1 << index
        while found:  # rule indexes in ascending order: the lowest set bit first
            lowest = found & -found
            r = lowest.bit_length() - 1
            masks[r] = masks.get(r, 0) | bit
            found ^= lowest

    def _scan(self, index: int, text: str) -> int:
        """Bit set of the rules matching the text of field `index` (uncached)."""
        if index == _NAME:
            tokens = _NAME_WORD.findall(text)  # not lower-cased: `_Words` does it
        else:
            if index == _EXPR:
                text = _expr_of(text)
            tokens = _words_of(text)
        found = self.words.scan(tokens) & self.allowed[index]
        patterns = self.patterns[index]
        if patterns:  # searched in the lower-cased text (an expression is lower-cased already)
            low = text if index == _EXPR else (" ".join(tokens) if index == _NAME else text).lower()
            found = patterns.search(low, found)
        return found

    def _gate(self, labels: Mapping[str, str], masks: dict[int, int]) -> None:
        """Rules with `labels` count only when every label matches."""
        for r, rule in self.gated:
            if any(labels.get(k) != v for k, v in rule.labels):
                masks.pop(r, None)
            elif not (rule.keywords or rule.phrases or rule.patterns):
                masks[r] = masks.get(r, 0) | (1 << _LABELS)


def _votes(table: RuleTable, alert: Alert) -> _Votes:
    """Per-type scores and rule contributions of one alert, memoised by its content."""
    matcher, annotations, labels = table.matcher, alert.annotations, alert.labels
    name = alert.name
    key: tuple[str | None, ...] = (
        name,
        annotations.get("summary"),
        annotations.get("description"),
        annotations.get("message"),
        alert.generator_url,
    )
    if not labels.keys().isdisjoint(matcher.label_keys):  # most alerts have none of them
        key += tuple(map(labels.get, matcher.label_keys))
    found = matcher.alerts.get(key)
    if found is None:
        found = _remember(matcher.alerts, key, _score(table, matcher.alert_masks(alert, name)))
    return found


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(memo) >= _MEMO_SIZE:  # bounded: alert text is open-ended
        memo.clear()
    memo[key] = value
    return value


def _words_of(text: str) -> list[str]:
    """`_WORD.findall(text.lower())`, three times faster for ASCII (nearly all alert text)."""
    if text.isascii():  # bytes.translate is a table look-up; str.translate calls a mapping
        return text.encode().translate(_LOWER_WORDS).decode().split()
    return _WORD.findall(text.lower())


def _expr_of(generator_url: str) -> str:
    """The PromQL expression of a Prometheus generatorURL, lower-cased."""
    found = _EXPR_PARAM.search(generator_url)
    return unquote_plus(found.group(1)).lower() if found else ""


# ------------------------------------------------------------------- scoring


@dataclass(slots=True)
class _Evidence:
    """What the rules found in one firing alert."""

    alert: Alert
    severity: Severity
    managed: bool
    scores: Sequence[float]
    matched: Mapping[int, float]  # rule index -> contribution to its issue type (shared)
    named: int  # bit set of the issue types its alertname supports
    restartable: bool  # no matched rule argues against a restart


def _score(table: RuleTable, masks: Mapping[int, int]) -> _Votes:
    votes, mask_weights = table.votes, table.mask_weights
    if table.has_user_rules and any(votes[r][2] for r in masks):  # user rules take precedence
        masks = {r: m for r, m in masks.items() if votes[r][2]}
    scores = [0.0] * len(_TYPES)
    matched: dict[int, float] = {}
    named = 0
    restartable = True
    for r, mask in masks.items():
        type_index, weight, _, no_restart = votes[r]
        contribution = weight * mask_weights[mask]
        scores[type_index] += contribution
        matched[r] = contribution
        if mask & 1 << _NAME and weight > 0:
            named |= 1 << type_index
        if no_restart and contribution > 0:
            restartable = False
    return tuple(scores), matched, named, restartable


def _combined(evidence: Sequence[_Evidence]) -> Sequence[float]:
    """Per-type scores of a group: averaged with weights 1 + severity rank."""
    if len(evidence) == 1:
        return evidence[0].scores
    weights = [1 + e.severity.rank for e in evidence]
    total = sum(weights)
    return [
        sum(w * e.scores[i] for w, e in zip(weights, evidence, strict=True)) / total
        for i in range(len(_TYPES))
    ]


def _best(table: RuleTable, scores: Sequence[float]) -> tuple[IssueType, float, float]:
    """Winning issue type, its score and the runner-up's score (ties: tie_order)."""
    ranked = table.tie_scores(scores)
    top = max(ranked)  # max() and index() take the first of equals: the tie_order
    second = max(sorted(ranked)[-2], 0.0)
    if top < table.min_score:
        return _UNKNOWN, max(top, 0.0), second
    return _TYPES[table.vote_order[ranked.index(top)]], top, second


@functools.lru_cache(maxsize=4096)  # a pure function of few distinct values: rule weights
def _confidence(issue_type: IssueType, top: float, second: float, named: bool) -> float:
    """Stronger, one-sided evidence gives higher confidence (0.2 .. 0.95).

    The alertname is its author's own statement of the problem, so evidence found
    there counts extra: a bare `PredictorDown` is clear, "may be down" in a
    description is a guess.
    """
    if issue_type is _UNKNOWN:
        return 0.2
    strength = 1.0 - math.exp(-(top + (1.0 if named else 0.0)) / 1.6)
    agreement = 0.4 + 0.6 * (top - second) / top
    return round(0.2 + 0.75 * strength * agreement, 3)


@dataclass(slots=True)
class _Finding:
    """The notification-level result being assembled."""

    issue_type: IssueType
    severity: Severity
    confidence: float
    managed: bool
    rules: list[Rule]  # rules that voted for issue_type, strongest first
    ranked: tuple[int, ...]  # their indexes in the table
    restartable: bool = True
    cleared: bool = False
    signals: str = ""
    notes: list[str] = field(default_factory=list)
    situations: list[str] = field(default_factory=list)

    def reclassify(self, issue_type: IssueType, why: str) -> None:
        """Live context overrides the rules: say so instead of listing rule ids."""
        if issue_type is not self.issue_type:
            self.signals = f"{why}; the alert text suggested {self.issue_type.value}"
            self.issue_type = issue_type


def _matches_any(labels: Mapping[str, str], matchers: Iterable[Iterable[tuple[str, str]]]) -> bool:
    """True when all labels of any one matcher equal the alert's labels."""
    for matcher in matchers:
        for key, value in matcher:
            if labels.get(key) != value:
                break
        else:
            return True
    return False


def _find(table: RuleTable, evidence: Sequence[_Evidence]) -> _Finding:
    single = len(evidence) == 1
    issue_type, top, second = _best(table, evidence[0].scores if single else _combined(evidence))
    winner, votes = _TYPE_INDEX[issue_type], table.votes
    totals: dict[int, float] = {}
    for e in evidence:
        for r, contribution in e.matched.items():
            if contribution > 0 and votes[r][0] == winner:
                totals[r] = totals.get(r, 0.0) + contribution
    ranked = tuple(sorted(totals, key=totals.__getitem__, reverse=True))
    if single:
        first = evidence[0]
        severity, managed, restartable = first.severity, first.managed, first.restartable
        named = bool(first.named >> winner & 1)
    else:
        severity = max((e.severity for e in evidence), key=_rank)
        managed = any(e.managed for e in evidence)
        restartable = all(e.restartable for e in evidence)
        named = any(e.named >> winner & 1 for e in evidence)
    confidence = _confidence(issue_type, top, second, named)
    rules = list(map(table.rules.__getitem__, ranked))
    return _Finding(issue_type, severity, confidence, managed, rules, ranked, restartable)


def _rank(severity: Severity) -> int:
    return severity.rank


# ------------------------------------------------------------------- context


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _apply_predictor(finding: _Finding, predictor: Mapping[str, Any]) -> None:
    """An unreachable predictor is an outage, whatever the alert says."""
    reachable = predictor.get("reachable")
    if reachable is False:
        error = predictor.get("error")
        detail = f" ({error})" if isinstance(error, str) and error else ""
        finding.notes.append(f"the predictor is unreachable right now{detail}")
        finding.reclassify(IssueType.AVAILABILITY, "live probe")
        finding.severity = Severity.CRITICAL
        finding.confidence = max(finding.confidence, 0.9)
        finding.situations.append("unreachable")
    elif reachable is True and finding.issue_type is IssueType.AVAILABILITY:
        if predictor.get("healthy") is True:
            finding.notes.append("the predictor answers and reports healthy now")
            finding.cleared = True
    elif predictor.get("healthy") is False:
        finding.notes.append("the predictor reports itself unhealthy")


def _apply_metrics(finding: _Finding, metrics: Mapping[str, Any], limits: Thresholds) -> None:
    """Feed outage or model problem; otherwise, has the condition already cleared?"""
    if "unreachable" in finding.situations:
        return
    lag = _number(metrics.get("feed_lag_seconds"))
    accuracy = _number(metrics.get("accuracy"))
    stale = lag is not None and lag > limits.feed_lag_stale_seconds
    if stale and finding.issue_type in _FEED_EXPLAINS:
        finding.notes.append(f"the market-data feed is {lag:.0f} s behind: a feed outage")
        finding.reclassify(IssueType.DATA, "feed lag")
        finding.confidence = max(finding.confidence, 0.8)
        finding.situations.append("feed_outage")
        return
    model_alert = finding.issue_type in (IssueType.DATA, IssueType.UNKNOWN)
    if accuracy is not None and accuracy < limits.accuracy_floor and not stale and model_alert:
        finding.notes.append(
            f"accuracy is {accuracy:.2f} with a fresh feed: the model has degraded"
        )
        finding.reclassify(IssueType.DATA, "model accuracy")
        finding.confidence = max(finding.confidence, 0.75)
        finding.situations.append("model_degraded")
        return
    _apply_clearance(finding, metrics)


def _apply_clearance(finding: _Finding, metrics: Mapping[str, Any]) -> None:
    """Lower the confidence (not the severity) of an alert that looks cleared."""
    readings = []
    for rule in finding.rules:
        clearance = rule.clears_when
        value = _number(metrics.get(clearance.metric)) if clearance else None
        if clearance and value is not None:
            readings.append((clearance.cleared(value), clearance.metric, value))
    if readings and all(cleared for cleared, _, _ in readings):
        _, metric, value = readings[0]
        finding.notes.append(f"the condition looks cleared already ({metric} is {value:g} now)")
        finding.cleared = True
    if finding.cleared:
        finding.confidence = round(finding.confidence * 0.6, 3)


def _apply_effectiveness(
    finding: _Finding,
    evidence: Sequence[_Evidence],
    effectiveness: Mapping[str, Any],
    action: str,
    limits: Thresholds,
) -> None:
    """Escalate instead of restarting when recent restarts did not fix this alert."""
    for name in dict.fromkeys(e.alert.name for e in evidence):
        history = _mapping(_mapping(effectiveness.get(name)).get(action)).get("recent")
        if not isinstance(history, list | tuple):
            continue
        recent = [x for x in history if isinstance(x, bool)][-limits.restart_history_window :]
        failures = recent.count(False)
        if failures >= limits.restart_failures_to_escalate:
            finding.notes.append(
                f"{action} failed in {failures} of the last {len(recent)} attempts "
                f"for {name}, so escalating instead"
            )
            finding.situations.append("restart_ineffective")
            return


def _raise_severity(finding: _Finding) -> None:
    """Raise (never lower) the severity on evidence."""
    floors = [r.severity for r in finding.rules if r.severity]
    outage = finding.managed and finding.issue_type is _AVAILABILITY
    if outage and finding.restartable and not finding.cleared:
        floors.append(_CRITICAL if finding.confidence >= 0.8 else _HIGH)
    if floors:
        finding.severity = max([finding.severity, *floors], key=_rank)


# ------------------------------------------------------------------- wording


def _headline(evidence: Sequence[_Evidence]) -> Alert:
    if len(evidence) == 1:
        return evidence[0].alert
    return max(evidence, key=lambda e: (e.managed, e.severity.rank)).alert


def _where(labels: Mapping[str, str]) -> str:
    instance, job, service = labels.get("instance"), labels.get("job"), labels.get("service")
    parts = [f"job {job}"] if job else []
    if service and service != job:
        parts.append(f"service {service}")
    if instance:
        return f"{instance} ({', '.join(parts)})" if parts else instance
    return ", ".join(parts) or "an unnamed target"


def _summary(alert: Alert) -> str:
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    text = _SPACES.sub(" ", text).strip() if "  " in text or "\n" in text else text.strip()
    text = text.rstrip(".")
    return text if len(text) <= 200 else text[:197].rstrip() + "..."


#: Enum member -> its plain string value: formats quicker than the member itself.
_TEXT: dict[IssueType | Severity, str] = {m: m.value for e in (IssueType, Severity) for m in e}
_validate_verdict = Verdict.__pydantic_validator__.validate_python


def _describe(finding: _Finding, evidence: Sequence[_Evidence], head: Alert, where: str) -> str:
    """What fires where (and its summary), how it was classified and why."""
    others = len(evidence) - 1
    more = f" with {others} other alert{'s' if others > 1 else ''}" if others else ""
    summary = _summary(head)
    signals = finding.signals or ", ".join([rule.id for rule in finding.rules[:3]])
    notes = "".join([f"; {note}" for note in finding.notes]) if finding.notes else ""
    return (
        f"{head.name or 'An unnamed alert'} is firing on {where}{more}"
        f"{': ' if summary else ''}{summary}. Classified as {_TEXT[finding.issue_type]} "
        f"({signals or 'no known signal matched'}), severity {_TEXT[finding.severity]}{notes}."
    )


def _recommend(table: RuleTable, finding: _Finding, head: Alert, where: str) -> list[str]:
    """2-5 steps: runbook, situation, rule-specific, then by issue type."""
    runbook = head.annotations.get("runbook_url") or head.annotations.get("runbook")
    steps = [f"Follow the runbook: {runbook}"] if runbook else []
    values: dict[str, str] | None = None
    for step in _candidates(table, finding):
        if "{" in step:
            values = values or _placeholders(head, where)
            try:  # noqa: SIM105 - contextlib.suppress is a context manager per step
                step = step.format_map(values)
            except (KeyError, ValueError, IndexError, AttributeError):
                pass  # an unknown placeholder: show the text as written
        if step not in steps:
            steps.append(step)
            if len(steps) == 5:
                break
    return steps


def _candidates(table: RuleTable, finding: _Finding) -> tuple[str, ...]:
    """Step texts to choose from, in order (placeholders not filled in yet)."""
    by_type = table.type_steps[finding.managed, finding.issue_type]
    restart_loop = finding.issue_type is _AVAILABILITY and not finding.restartable
    if not (restart_loop or finding.situations) and table.rules_with_steps.isdisjoint(
        finding.ranked
    ):
        return by_type  # most findings: nothing but the issue type's steps
    situations = table.actions.get("situations", {})
    keys = ["restart_loop", *finding.situations] if restart_loop else finding.situations
    candidates = [step for key in keys for step in situations.get(key, ())]
    candidates += [step for rule in finding.rules for step in rule.recommended_actions]
    return _unique([*candidates, *by_type])


def _unique(steps: Iterable[str]) -> tuple[str, ...]:
    """Without repeats: a repeated text would be filled in the same way and skipped."""
    return tuple(dict.fromkeys(steps))


def _placeholders(alert: Alert, where: str) -> dict[str, str]:
    """Values for {alertname} {instance} {job} {service} {where} in action texts."""
    labels = alert.labels
    service = labels.get("service") or labels.get("job") or "the service"
    return {
        "alertname": alert.name or "the alert",
        "instance": labels.get("instance") or "the instance",
        "job": labels.get("job") or service,
        "service": service,
        "where": where,
    }


def _resolved_verdict(notification: Notification) -> Verdict:
    names = list(dict.fromkeys(a.name or "an unnamed alert" for a in notification.alerts))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    verb = "is" if len(names) == 1 else "are"
    where = _where(notification.alerts[0].labels)
    return Verdict(
        issue_detected=False,
        severity=Severity.INFO,
        issue_type=IssueType.UNKNOWN,
        description=f"Resolved: {shown} on {where} {verb} no longer firing; nothing to do.",
        recommended_actions=[
            "No action needed now.",
            "If it keeps firing and resolving, look at the alert's threshold and `for` duration.",
        ],
        proposed_action="none",
        confidence=0.95,
        requires_immediate_action=False,
    )


# ------------------------------------------------------------------ analyzer


class RuleAnalyzer:
    """Deterministic analyzer driven by the rule table in `rules.toml`.

    `managed_service`: label matchers; an alert concerns the managed service when
    all labels of any one matcher equal its labels. `extra_rules`: the user's
    `[[analysis.rules]]` tables, which take precedence over built-in rules.
    `restart_action`: the name of the action proposed for a restart.
    Raises `ConfigError` for a bad rule or an empty matcher.
    """

    name = "rules"

    def __init__(
        self,
        *,
        managed_service: Sequence[Mapping[str, str]] = (
            {"job": "market-predictor"},
            {"service": "market-predictor"},
        ),
        extra_rules: Sequence[Mapping[str, Any]] = (),
        restart_action: str = "restart",
    ) -> None:
        self.table = load_rule_table(extra_rules)
        self.restart_action = restart_action
        self._managed = tuple(tuple(matcher.items()) for matcher in managed_service)
        if not all(self._managed):
            raise ConfigError("managed_service: every label matcher must name at least one label")

    def judge(self, notification: Notification, context: Mapping[str, Any]) -> Judgement:
        """Judge one notification; `context` holds optional live facts (`{}` if none).

        Context keys (all optional, odd shapes ignored): `predictor` (reachable,
        healthy, error), `metrics` (up, error_ratio, p95_latency_seconds,
        feed_lag_seconds, accuracy) and `effectiveness`
        (`{alertname: {action: {"recent": [bool, ...]}}}`, most recent last).
        """
        firing = notification.firing if notification.status == "firing" else []
        if not firing:
            return Judgement(verdict=_resolved_verdict(notification), analyzer="rules")
        evidence = [self._evidence(alert) for alert in firing]
        finding = _find(self.table, evidence)
        if context:
            self._apply_context(finding, evidence, _mapping(context))
        if finding.issue_type is _AVAILABILITY and not finding.restartable:
            finding.notes.append("it is restarting in a loop, so another restart will not help")
        _raise_severity(finding)
        return Judgement(self._verdict(finding, evidence), "rules")

    def _evidence(self, alert: Alert) -> _Evidence:
        table = self.table
        scores, matched, named, restartable = _votes(table, alert)
        managed = _matches_any(alert.labels, self._managed)
        severity = table.severity_of(alert)
        return _Evidence(alert, severity, managed, scores, matched, named, restartable)

    def _apply_context(
        self, finding: _Finding, evidence: Sequence[_Evidence], context: Mapping[str, Any]
    ) -> None:
        if not finding.managed:  # the live context describes the managed service only
            return
        limits = self.table.thresholds
        _apply_predictor(finding, _mapping(context.get("predictor")))
        _apply_metrics(finding, _mapping(context.get("metrics")), limits)
        effectiveness = _mapping(context.get("effectiveness"))
        _apply_effectiveness(finding, evidence, effectiveness, self.restart_action, limits)

    def _verdict(self, finding: _Finding, evidence: Sequence[_Evidence]) -> Verdict:
        outage = finding.managed and finding.issue_type is _AVAILABILITY
        head = _headline(evidence)
        where = _where(head.labels)
        # Validated exactly as `Verdict(...)` would, without its Python-level __init__.
        return _validate_verdict(
            {
                "issue_detected": True,
                "severity": finding.severity,
                "issue_type": finding.issue_type,
                "description": _describe(finding, evidence, head, where),
                "recommended_actions": _recommend(self.table, finding, head, where),
                "proposed_action": self._action(finding),
                "confidence": min(max(finding.confidence, 0.0), 1.0),
                "requires_immediate_action": outage or finding.severity is _CRITICAL,
            }
        )

    def _action(self, finding: _Finding) -> str:
        """`restart` only for an outage of the managed service that a restart can fix."""
        for rule in finding.rules:
            if rule.proposed_action:
                if rule.proposed_action != self.restart_action:
                    return rule.proposed_action
                break
        outage = finding.managed and finding.issue_type is _AVAILABILITY
        if outage and finding.restartable:
            ineffective = "restart_ineffective" in finding.situations
            return "escalate" if ineffective else self.restart_action
        return "escalate" if finding.severity is _CRITICAL else "none"
