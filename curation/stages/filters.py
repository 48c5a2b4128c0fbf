"""Threshold rules from `filters:` in the config: `min_<column>` / `max_<column>` -> value.

Scoring stages only add columns; these rules decide. The runner applies each rule right after
the stage that produces its column (so an image without a large enough person never reaches
CLIP), and the `filter` stage applies all of them again, which is how new thresholds are applied
without re-running any model. A null value fails the rule: the measurement is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import rule_target


@dataclass(frozen=True)
class FilterRule:
    key: str  # "min_person_short_side": also the reject reason
    column: str
    op: str  # "min" | "max"
    value: float


def parse_rules(filters: dict[str, float | None]) -> list[FilterRule]:
    rules = []
    for key, value in filters.items():
        if value is None:
            continue
        op, column = rule_target(key)
        rules.append(FilterRule(key=key, column=column, op=op, value=float(value)))
    return rules


def apply_rules(rules: list[FilterRule], table: pa.Table) -> list[str | None]:
    """Per row: the first failing rule's key, or None when every rule passes."""
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    for rule in rules:
        if rule.column not in table.column_names:
            continue
        col = table.column(rule.column)
        ok = pc.greater_equal(col, rule.value) if rule.op == "min" else pc.less_equal(col, rule.value)
        ok = pc.fill_null(ok, False).to_pylist()
        for i in range(n):
            if reasons[i] is None and not ok[i]:
                reasons[i] = rule.key
    return reasons
