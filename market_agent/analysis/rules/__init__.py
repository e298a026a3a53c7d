"""The deterministic rule analyzer: the embedded default, always available.

Each firing alert is cut into fields (alertname words, summary, description,
PromQL expression, semantic labels) and scored with the weighted keyword, phrase
and regex rules of `rules.toml` (the schema is documented there). The `severity`
label is mapped, and then the optional live context about the managed service
(reachability, current metrics, how well restarts worked before) may raise the
severity, reclassify the issue or lower the confidence.

Modules, in the order an alert meets them: `table` (the schema and the compiled
table), `matcher` (which rules match: every speed trick lives there), `scoring`
(issue type and confidence), `adjust` (live context), `wording` (description and
steps), `analyzer` (`RuleAnalyzer`, tying them together).
"""

from market_agent.analysis.rules.analyzer import RuleAnalyzer
from market_agent.analysis.rules.table import RuleTable, load_rule_table

__all__ = ["RuleAnalyzer", "RuleTable", "load_rule_table"]
