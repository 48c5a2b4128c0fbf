"""Opening a run folder: its config, its lineage, and the ingest plan, checked before any work."""

from __future__ import annotations

import time
from typing import Any

import yaml

from curation import __version__
from curation.config import Config, ConfigError
from curation.io import fs
from curation.models.weights import random_weight_stages
from curation.runner.store import RunStore
from curation.stages.dag import weight_files


def _changed_sections(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k != "run" and old.get(k) != new.get(k)]


def init_run_folder(store: RunStore, cfg: Config, input_uri: str, stage: str | None, reconfigure: bool) -> None:
    info = store.read_run_info()
    if stage not in (None, "ingest") and not fs.exists(fs.join(input_uri, "run.json")):
        raise ConfigError(f"--stage {stage} reads a previous run folder, and {input_uri} is not one "
                          f"(no run.json); run the earlier stages first")
    if info and info.get("config_hash") != cfg.hash() and not reconfigure:
        saved = store.uri("config.yaml")
        old_cfg = yaml.safe_load(fs.read_bytes(saved)) if fs.exists(saved) else {}
        changed = _changed_sections(old_cfg or {}, cfg.to_dict()) or ["run"]
        raise ConfigError(f"{store.out} was written with a different config (changed: {', '.join(changed)}); "
                          f"add --reconfigure to redo only the affected stages, or use a new --output")
    upstream = None
    if stage not in (None, "ingest") and input_uri.rstrip("/") != store.out:
        upstream = input_uri.rstrip("/")
    if stage in (None, "ingest"):
        ensure_plan(store, cfg, input_uri)
    run = {"input": input_uri if upstream is None else (info or {}).get("input", input_uri),
           "upstream": upstream or (info or {}).get("upstream"), "code_version": __version__,
           "config_hash": cfg.hash(), "updated_at": time.time(),
           # Stages run with random weights (asked for by name) are carried into the ledger and
           # the manifest, so no output of such a run can pass for a real one.
           "random_weights": sorted(set((info or {}).get("random_weights", []))
                                    | set(random_weight_stages(weight_files(cfg))))}
    if upstream is not None:
        run["input"] = (RunStore(upstream).read_run_info() or {}).get("input", upstream)
    fs.write_bytes(store.uri("config.yaml"), cfg.to_yaml().encode())
    fs.write_json(store.uri("run.json"), run)
    store._upstream_loaded = False


def ensure_plan(store: RunStore, cfg: Config, input_uri: str) -> list[dict[str, Any]]:
    from curation.stages.ingest import IngestStage

    uri = store.uri("ingest", "plan.json")
    if fs.exists(uri):
        saved = fs.read_json(uri)
        if saved["input"] != input_uri:
            raise ConfigError(f"{store.out} holds a run of {saved['input']}, not {input_uri}; use a new --output")
        return saved["shards"]
    shards = IngestStage(cfg).plan(input_uri)
    fs.write_json(uri, {"input": input_uri, "shards": shards})
    return shards


def load_plan(store: RunStore) -> list[dict[str, Any]]:
    s: RunStore | None = store
    while s is not None:
        uri = s.uri("ingest", "plan.json")
        if fs.exists(uri):
            return fs.read_json(uri)["shards"]
        s = s.upstream
    raise ConfigError(f"{store.out} has no ingest plan; run `curate run --stage ingest` first")


def check_upstream_complete(store: RunStore, prev: str | None) -> None:
    if prev is None:
        return
    plan = [s["shard"] for s in load_plan(store)]
    done = store.done_records(prev)
    missing = [sh for sh in plan if sh not in done]
    if missing:
        raise ConfigError(f"stage {prev!r} is not complete ({len(plan) - len(missing)}/{len(plan)} shards done); "
                          f"run `curate run --stage {prev}` first")
