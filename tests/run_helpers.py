"""Helpers shared by the foundation tests (a uniquely named module: `conftest` is ambiguous
once sub-folders have their own conftest.py)."""


def base_overrides(*extra: str) -> list[str]:
    """The non-model DAG: what the foundation tests run end to end."""
    return ["run.stages=[ingest,decode,filter,shard]", "filters.min_person_short_side=null",
            "ingest.shard_size=16", ALLOW_LOOPBACK, *extra]


# The tests' HTTP servers listen on loopback, which ingest refuses unless a setting names it.
ALLOW_LOOPBACK = "ingest.allow_networks=[127.0.0.0/8]"
