"""A stage that raises on a batch loses none of its other rows: the runner retries the batch,
then bisects it down to the bad rows, which become `error:<stage>` rejects with their message."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
import pytest

from curation.runner.stage_runner import StageRunner
from curation.stages.base import Stage
from curation.stages.dag import load_config

pytestmark = pytest.mark.timeout(60)


class Poisoned(Stage):
    """Scores rows by their id; any batch holding a `bad` row raises, and so does the first call
    of all (a transient fault that the retry must absorb)."""

    name = "poisoned"
    requires = ("id",)
    produces = ("aesthetic",)
    calls: ClassVar[list[int]] = []

    def process(self, table: pa.Table) -> dict:
        ids = table.column("id").to_pylist()
        Poisoned.calls.append(len(ids))
        if len(Poisoned.calls) == 1:
            raise ConnectionError("transient: first call fails")
        bad = [i for i in ids if i.startswith("bad")]
        if bad:
            raise ValueError(f"cannot score {bad[0]}")
        return {"aesthetic": [float(i.split("-")[1]) for i in ids]}


def _run(ids: list[str]) -> dict:
    Poisoned.calls = []
    runner = StageRunner(Poisoned, load_config(None, []), [], 1)
    return runner(pa.table({"id": ids})).to_pydict()


def test_transient_failure_is_retried_without_rejects():
    out = _run([f"ok-{i}" for i in range(8)])
    assert out["reject"] == [None] * 8 and out["aesthetic"] == [float(i) for i in range(8)]
    assert Poisoned.calls[:2] == [8, 8]  # failed once, retried whole


def test_bad_rows_are_isolated_and_recorded_the_rest_is_scored():
    ids = [f"ok-{i}" for i in range(16)]
    ids[5], ids[11] = "bad-5", "bad-11"
    out = _run(ids)
    assert out["id"] == ids  # every row comes back, in order
    bad = {5, 11}
    assert [i for i, r in enumerate(out["reject"]) if r] == sorted(bad)
    assert all(out["reject"][i] == "error:poisoned" for i in bad)
    assert out["error"][5] == "ValueError: cannot score bad-5" and out["error"][11] == "ValueError: cannot score bad-11"
    assert [out["aesthetic"][i] for i in range(16) if i not in bad] == [float(i) for i in range(16) if i not in bad]
    assert out["aesthetic"][5] is None and out["error"][0] is None
    assert max(Poisoned.calls[2:]) < 16  # bisected: no further whole-batch attempts
