"""Which rules match which fields of an alert: every speed trick of the rule engine.

Alert text is cut into words once (`bytes.translate` for ASCII), all keywords and
phrases run as one word automaton whose transitions are memoised per word, the
regex patterns are skipped unless a literal they need occurs in the text (found
with CPython's private regex parser), rule sets are bit sets, and the results are
memoised per field text and per alert. Every memo is bounded. The plain
definitions these must agree with are in `rules.toml`; tests/test_rules.py checks
that they do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import unquote_plus

from market_agent.models import Alert

if TYPE_CHECKING:
    from market_agent.analysis.rules.scoring import Votes
    from market_agent.analysis.rules.table import Rule

#: Where a rule can match, in the order of their bits in a field mask.
FieldName = Literal["name", "summary", "description", "expr", "labels"]
FIELDS: tuple[FieldName, ...] = get_args(FieldName)
NAME, SUMMARY, DESCRIPTION, EXPR, LABELS = range(len(FIELDS))
ALL_FIELDS = (1 << len(FIELDS)) - 1

Element = tuple[str, bool]  # (word, is_prefix)
Elements = tuple[Element, ...]
WILDCARD: Element = ("", True)  # "*" as a whole word: any one word
MEMO_SIZE = 20_000  # entries per memo: alert text is open-ended

_WORD = re.compile(r"[a-z0-9]+")
#: A `bytes.translate` table for ASCII text: lower-case it, and cut it into `_WORD`s
#: (every other character becomes a space).
_LOWER_WORDS = bytes(
    ord(low) if _WORD.fullmatch(low := chr(c).lower()) and c < 128 else 32 for c in range(256)
)
# The first two alternatives never match at the same place; the common one goes first.
_NAME_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?=[A-Z][a-z])|[A-Z]+|[0-9]+[a-z]*")
_EXPR_PARAM = re.compile(r"[?&]g0\.expr=([^&]*)")


# ---------------------------------------------------------------- tokenising


def phrase_elements(entry: str) -> list[Element]:
    """A keyword or phrase of the rule table, cut into words like alert text."""
    elements: list[Element] = []
    for piece in entry.lower().split():
        if piece == "*":
            elements.append(WILDCARD)
            continue
        prefix = piece.endswith("*")
        words = _WORD.findall(piece)
        elements.extend((w, prefix and k == len(words) - 1) for k, w in enumerate(words))
    return elements


def words_of(text: str) -> list[str]:
    """`_WORD.findall(text.lower())`, three times faster for ASCII (nearly all alert text)."""
    if text.isascii():  # bytes.translate is a table look-up; str.translate calls a mapping
        return text.encode().translate(_LOWER_WORDS).decode().split()
    return _WORD.findall(text.lower())


def expr_of(generator_url: str) -> str:
    """The PromQL expression of a Prometheus generatorURL, lower-cased."""
    found = _EXPR_PARAM.search(generator_url)
    return unquote_plus(found.group(1)).lower() if found else ""


def remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """`memo[key] = value`, the memo emptied first when full; returns `value`."""
    if len(memo) >= MEMO_SIZE:  # bounded: alert text is open-ended
        memo.clear()
    memo[key] = value
    return value


# ---------------------------------------------------------- keywords, phrases


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

    def add(self, elements: Elements, rule: int) -> None:
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
        remember(state.next, word, following)
        return following

    def _state(self, nodes: frozenset[_Node], hits: int) -> _State:
        if len(self.states) >= MEMO_SIZE:  # bounded, like every memo: start afresh
            self.states = {(self.start.nodes, self.start.hits): self.start}
            self.start.next.clear()
        state = self.states[nodes, hits] = _State(nodes, hits)
        return state


# ------------------------------------------------------------------ patterns


class _Patterns:
    """The regex patterns of the rules allowed in a field."""

    def __init__(self, rules: Sequence[Rule], allowed: Iterable[int]) -> None:
        self.patterns = [
            (pattern, needed(pattern), r) for r in allowed for pattern in rules[r].patterns
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


def needed(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Strings one of which occurs in every text that `pattern` matches (("",) if unknown).

    An `in` test on them skips most searches, and a search is dear: a regex without
    a literal prefix (such as `\\babsent`) is tried at every position of the text.
    """
    if pattern.flags & re.IGNORECASE:
        return ("",)
    try:
        from re import _parser  # type: ignore[attr-defined]  # CPython's private regex parser

        needs = _literal_needs(_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # pragma: no cover - `re._parser` moved: do without the prefilter
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
    from re import _constants as sre  # type: ignore[attr-defined]

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


# ------------------------------------------------------------------- matcher


class Matcher:
    """Finds the rules that match each field of an alert, and memoises their votes.

    `score` turns "rule index -> bit mask of the fields where it matched" into the
    alert's votes. Results are memoised per word (in the automaton), per distinct
    alert name, expression and label text, and per distinct alert content
    (Alertmanager re-sends firing alerts). Every memo is bounded.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        semantic_labels: tuple[str, ...],
        score: Callable[[Mapping[int, int]], Votes],
    ) -> None:
        self.semantic_labels = semantic_labels
        self.score = score
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
        self.alerts: dict[tuple[str | None, ...], Votes] = {}
        #: Per field index: text -> bit set of the rules matching it. Not for summaries
        #: and descriptions: they mostly name the instance or quote the value, so
        #: they rarely repeat and a memo would cost more than it saves.
        self._texts: tuple[dict[str, int] | None, ...] = tuple(
            None if i in (SUMMARY, DESCRIPTION) else {} for i in range(len(FIELDS))
        )

    def forget_alerts(self) -> None:
        """Drop the per-alert and per-text memos (word memos stay): for benchmarks."""
        self.alerts.clear()
        for memo in self._texts:
            if memo is not None:
                memo.clear()

    def votes(self, alert: Alert) -> Votes:
        """The scored votes of one alert, memoised by its content."""
        annotations, labels = alert.annotations, alert.labels
        name = alert.name
        key: tuple[str | None, ...] = (
            name,
            annotations.get("summary"),
            annotations.get("description"),
            annotations.get("message"),
            alert.generator_url,
        )
        if not labels.keys().isdisjoint(self.label_keys):  # most alerts have none of them
            key += tuple(map(labels.get, self.label_keys))
        found = self.alerts.get(key)
        if found is None:
            found = remember(self.alerts, key, self.score(self.alert_masks(alert, name)))
        return found

    def alert_masks(self, alert: Alert, name: str) -> dict[int, int]:
        """Rule index -> bit mask of the fields of `alert` (named `name`) where the rule matched."""
        masks: dict[int, int] = {}
        annotations, labels = alert.annotations, alert.labels
        self._field(NAME, name, masks)
        if text := annotations.get("summary"):
            self._field(SUMMARY, text, masks)
        if text := annotations.get("description"):
            self._field(DESCRIPTION, text, masks)
        if "message" in annotations:
            self._field(DESCRIPTION, annotations["message"], masks)
        if alert.generator_url:
            self._field(EXPR, alert.generator_url, masks)
        if not labels.keys().isdisjoint(self.semantic_labels):  # rare: skip the join
            values = " ".join([labels[k] for k in self.semantic_labels if k in labels])
            if values:
                self._field(LABELS, values, masks)
        if self.gated:
            self._gate(labels, masks)
        return masks

    def _field(self, index: int, text: str, masks: dict[int, int]) -> None:
        memo = self._texts[index]
        found: int | None
        if memo is None:
            found = self._scan(index, text)
        elif (found := memo.get(text)) is None:
            found = remember(memo, text, self._scan(index, text))
        bit = 1 << index
        while found:  # rule indexes in ascending order: the lowest set bit first
            lowest = found & -found
            r = lowest.bit_length() - 1
            masks[r] = masks.get(r, 0) | bit
            found ^= lowest

    def _scan(self, index: int, text: str) -> int:
        """Bit set of the rules matching the text of field `index` (uncached)."""
        if index == NAME:
            tokens = _NAME_WORD.findall(text)  # not lower-cased: `_Words` does it
        else:
            if index == EXPR:
                text = expr_of(text)
            tokens = words_of(text)
        found = self.words.scan(tokens) & self.allowed[index]
        patterns = self.patterns[index]
        if patterns:  # searched in the lower-cased text (an expression is lower-cased already)
            low = text if index == EXPR else (" ".join(tokens) if index == NAME else text).lower()
            found = patterns.search(low, found)
        return found

    def _gate(self, labels: Mapping[str, str], masks: dict[int, int]) -> None:
        """Rules with `labels` count only when every label matches."""
        for r, rule in self.gated:
            if any(labels.get(k) != v for k, v in rule.labels):
                masks.pop(r, None)
            elif not (rule.keywords or rule.phrases or rule.patterns):
                masks[r] = masks.get(r, 0) | (1 << LABELS)
