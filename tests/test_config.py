import pytest
import yaml

from curation.config import ConfigError
from curation.stages.dag import load_config


def test_defaults_yaml_and_overrides_layer(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"decode": {"min_side": 100}, "ingest": {"shard_size": 10}}))
    cfg = load_config(path, ["ingest.shard_size=7", "filters.min_width=300"])
    assert cfg.stage("decode").min_side == 100  # from the file
    assert cfg.stage("ingest").shard_size == 7  # override beats file
    assert cfg.filters["min_width"] == 300.0
    assert cfg.filters["min_person_short_side"] == 384.0  # default kept
    again = yaml.safe_load(cfg.to_yaml())
    assert again["ingest"]["shard_size"] == 7


@pytest.mark.parametrize("override,needle", [
    (["decod.min_side=3"], "did you mean 'decode'"),
    (["decode.min_sid=3"], "did you mean 'min_side'"),
    (["decode.min_side=big"], "expected a number"),
    (["filters.min_widht=3"], "did you mean 'width'"),
    (["filters.above_width=3"], "min_<column> or max_<column>"),
    (["run.stages=[ingest,decodr]"], "did you mean 'decode'"),
    (["run.early_filter=3"], "true/false"),
])
def test_bad_keys_and_values_are_one_line_errors(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("run: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception) as err:
        load_config(path)
    assert "python/object" in str(err.value) or "constructor" in str(err.value).lower()


def test_config_hash_tracks_content_not_cluster_address():
    a = load_config(None, ["run.address=ray://x:1"])
    b = load_config(None, [])
    c = load_config(None, ["filters.min_width=10"])
    assert a.hash() == b.hash() != c.hash()
