"""What every stage is: a named, picklable class whose fields are its config.

Kinds:
  read   - `ingest`: turns an input shard spec into rows (the runner calls `read_shard`).
  map    - per image: `process(table) -> columns` on the rows still kept. Cheap to build; models
           load in `setup()`, once per Ray actor (`stateful = True`) or per task.
  global - sees the whole kept dataset at once: `run_global(ds, ctx) -> ds`.
  write  - `shard`: writes the final WebDataset tars and the manifest.

A stage never drops rows. It returns its columns for every row it was given, and may set a
per-row `reject` reason; the runner records it in the ledger and stops the row there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from curation.config import Config, StageConfig
from curation.models.device import check_device, set_threads, torch_device
from curation.models.weights import WeightFile, resolve

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 64  # rows per batch on CPU workers
    gpu_batch_size: int | None = None  # rows per batch when the stage runs on a GPU (None: batch_size)
    concurrency: int | None = None  # max actors of a stateful stage; None = as many as fit
    # Relative CPU cost per image (seconds on one core, as measured by bench_model_stages.py).
    # Only ratios matter: place() sizes the actor pools of a fused segment in proportion, so the
    # costliest stage gets the most actors. None = unknown (the mean of the stages that say).
    cost: float | None = None


class Stage:
    name: ClassVar[str]
    kind: ClassVar[str] = "map"
    requires: ClassVar[tuple[str, ...]] = ()  # columns read (from earlier stages)
    produces: ClassVar[tuple[str, ...]] = ()  # columns added (declared in schema.py)
    rejects: ClassVar[tuple[str, ...]] = ()  # reasons this stage may give, for docs and `curate stages`
    resources: ClassVar[Resources] = Resources()
    stateful: ClassVar[bool] = False  # True: runs in an actor pool (a model loaded once per actor)
    uses_gpu: ClassVar[bool] = False
    Config: ClassVar[type] = StageConfig
    description: ClassVar[str] = ""
    # Set on an instance by the runner's grouping (stage_chain.fusable_groups) when the stage will
    # get a GPU: its batch size is then the GPU one.
    on_gpu: bool = False

    def __init__(self, config: Config):
        self.config = config
        self.params = config.stages.get(self.name) if config.stages else None

    # -- configuration -------------------------------------------------------------------------
    def config_sections(self) -> tuple[str, ...]:
        """Config sections this stage's output depends on; a change there re-runs the stage."""
        return (self.name,)

    def required_columns(self) -> tuple[str, ...]:
        return self.requires

    def effective_resources(self) -> Resources:
        r, c = self.resources, self.params
        if c is not None:
            r = Resources(
                num_cpus=r.num_cpus if c.num_cpus is None else c.num_cpus,
                num_gpus=r.num_gpus if c.num_gpus is None else c.num_gpus,
                batch_size=r.batch_size if c.batch_size is None else c.batch_size,
                gpu_batch_size=r.gpu_batch_size if c.gpu_batch_size is None else c.gpu_batch_size,
                concurrency=r.concurrency if c.concurrency is None else c.concurrency,
                cost=r.cost,
            )
        if self.on_gpu and r.gpu_batch_size:
            return replace(r, batch_size=r.gpu_batch_size)
        return r

    def check(self) -> None:
        """Start-up checks before any work (weights present, config consistent). Raise to stop."""

    # -- work ----------------------------------------------------------------------------------
    def setup(self, num_threads: int | None = None) -> None:
        """Load models. Called once per actor (stateful) or once per task, with the intra-op
        threads the runner gives it (None: the stage's own CPUs)."""

    def process(self, table: pa.Table) -> dict[str, Any]:
        """map stages: columns for every row of `table` (kept rows with `required_columns()`).

        Return `{column: values}` for each of `produces` (lists, numpy arrays; [N, D] arrays for
        fixed-size list columns), optionally `reject` (a reason or None per row).
        """
        raise TypeError(f"stage {self.name} is not a map stage")

    def run_global(self, ds: Any, ctx: Any) -> Any:
        """global stages: `ds` is a Ray Dataset of kept rows with `id`, `input_shard` and
        `required_columns()`. Return a Ray Dataset with `id`, `input_shard`, `produces` and
        `reject` (null when kept) for every input row. `ctx` is a runner.global_job.GlobalContext."""
        raise TypeError(f"stage {self.name} is not a global stage")


class ModelStage(Stage):
    """A map stage that runs a model, loaded once per Ray actor.

    The run's start-up calls `check()` on the driver for every stage before any work: the
    `device:` value, the model's own checks (`check_model()`), then every weight file resolved
    (a missing one is an error that says how to stage it). Each actor then calls
    `setup(num_threads)`: torch's threads follow the CPUs the actor was given, and `load()` builds
    the model from the resolved files.
    """

    stateful = True
    uses_gpu = True

    def weight_files(self) -> list[WeightFile]:
        """Files the model loads (each names its config key and how to stage it)."""
        return []

    @property
    def random_weights(self) -> bool:
        """True when the config asked for random weights by name (tests, benchmarks)."""
        return any(w.random for w in self.weight_files())

    def check(self) -> None:
        check_device(getattr(self.params, "device", None), f"{self.name}.device")
        self.check_model()
        resolve(self.weight_files())

    def check_model(self) -> None:
        """Model-specific start-up checks; raise ConfigError to stop the run."""

    def setup(self, num_threads: int | None = None) -> None:
        threads = set_threads(num_threads or self.effective_resources().num_cpus)
        self.load(resolve(self.weight_files()), threads)

    def load(self, found: dict[str, Any], threads: int) -> None:
        """Build the model from `found` (weight file name -> where it was found)."""
        raise TypeError(f"model stage {self.name} defines no load()")

    def device(self) -> str:
        """Where this actor runs the model: the `device:` value, else what Ray gave it."""
        return torch_device(getattr(self.params, "device", None))

    def weight_path(self, found: dict[str, Any], index: int = 0) -> Any:
        """Path of weight file `index`, or None when it is random."""
        w = self.weight_files()[index]
        return None if w.random else found[w.file].path
