"""`filter`: apply every threshold in `filters:` to the scored rows.

The runner already applies each threshold right after the stage that produces its column; this
stage applies them all again, so `curate run --stage filter --set filters.min_aesthetic=6`
re-decides from stored scores without re-running a model.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.schema import REJECT
from curation.stages.base import Resources, Stage
from curation.stages.filters import apply_rules, parse_rules
from curation.stages.registry import register_stage


@register_stage
class FilterStage(Stage):
    name = "filter"
    kind = "map"
    produces = ()
    rejects = ("min_<column>", "max_<column>")
    resources = Resources(num_cpus=0.5, batch_size=4096)
    description = "apply min_/max_ thresholds from `filters:` to any numeric column"

    def config_sections(self) -> tuple[str, ...]:
        return (self.name, "filters")

    def required_columns(self) -> tuple[str, ...]:
        return tuple(rule.column for rule in parse_rules(self.config.filters))

    def process(self, table: pa.Table) -> dict[str, Any]:
        return {REJECT: apply_rules(parse_rules(self.config.filters), table)}
