"""Label matching: which alerts concern the managed service (`analysis.managed_service`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def is_managed(labels: Mapping[str, str], matchers: Iterable[Mapping[str, str]]) -> bool:
    """True when all labels of any one (non-empty) matcher equal the alert's labels."""
    return any(
        matcher and all(labels.get(k) == v for k, v in matcher.items()) for matcher in matchers
    )
