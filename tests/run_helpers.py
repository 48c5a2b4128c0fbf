"""Helpers shared by the foundation tests (a uniquely named module: `conftest` is ambiguous
once sub-folders have their own conftest.py)."""


def base_overrides(*extra: str) -> list[str]:
    """The non-model DAG: what the foundation tests run end to end."""
    return ["run.stages=[ingest,decode,filter,shard]", "filters.min_person_short_side=null",
            "ingest.shard_size=16", *extra]
