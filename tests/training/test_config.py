from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import apply_overrides, build_config, load_config, to_dict
from training.errors import TrainingError

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("landcoverai")))
def test_shipped_configs_are_valid(name) -> None:
    config = load_config(CONFIGS / name)
    assert config.data.synthetic is not None and config.train.backbone == "resnet18"


def test_default_config_exports_the_default_bundle() -> None:
    config = load_config(CONFIGS / "default.yaml")
    assert config.bundle_json == Path("backend/bundles/default/landcover.json")
    assert config.export.params.tile_size == 256 and config.export.params.gsd_m == 0.25


TRIALS = [("finetune_mixed.yaml", "mixed"), ("finetune_v3.yaml", "v1,v3"), ("finetune_v3_crop256.yaml", "v1,v3"),
          ("finetune_v3_crop256_long.yaml", "v1,v3"), ("finetune_v4.yaml", "v1,v4"),
          ("finetune_v4_crop256.yaml", "v1,v4"), ("finetune_v5_crop256.yaml", "v1,v5"),
          ("finetune_v5_crop256_gentle.yaml", "v1,v5"), ("finetune_v6_crop256.yaml", "v1,v6"),
          ("finetune_v5_crop256_seed1.yaml", "v1,v5"), ("finetune_v5_v1quarter.yaml", "v1,v5,v5,v5"),
          ("finetune_v5_no_v1.yaml", "v5"), ("finetune_v5_hours.yaml", "v1,v5"),
          ("finetune_v5_colour.yaml", "v1,v5")]


@pytest.mark.parametrize("name, style", TRIALS)
def test_the_fine_tuning_trials_start_from_the_default_on_new_scenes_and_check_the_result(name, style) -> None:
    default, trial = load_config(CONFIGS / "default.yaml"), load_config(CONFIGS / name)
    assert default.data.synthetic.style == "v1" and trial.data.synthetic.style == style
    assert Path(trial.train.init_weights) == default.bundle_json and default.train.init_weights is None
    assert default.data.synthetic.seed != trial.data.synthetic.seed  # its held-out scenes are new to both
    assert (default.train.architecture, default.train.backbone) == (trial.train.architecture, trial.train.backbone)
    assert trial.bundle_json != default.bundle_json  # a trial never overwrites the shipped bundle
    assert trial.evaluate.held_out_scenes > 0 and (CONFIGS.parents[1] / trial.evaluate.sanity).is_file()


def test_the_crop_trial_changes_only_the_crop_and_the_batch_of_v3cs_run() -> None:
    v3c, crop = load_config(CONFIGS / "finetune_v3.yaml"), load_config(CONFIGS / "finetune_v3_crop256.yaml")
    assert crop.train.augment.crop ** 2 * crop.train.batch_size == v3c.train.augment.crop ** 2 * v3c.train.batch_size
    assert crop.train.augment.crop == 2 * v3c.train.augment.crop and crop.data == v3c.data
    assert (crop.train.epochs, crop.train.steps_per_epoch, crop.train.learning_rate) == \
        (v3c.train.epochs, v3c.train.steps_per_epoch, v3c.train.learning_rate)


@pytest.mark.parametrize("name, changed", [
    ("finetune_v5_crop256_seed1.yaml", {("train", "seed"): 1}),
    ("finetune_v5_v1quarter.yaml", {("data", "synthetic", "style"): "v1,v5,v5,v5"}),
    ("finetune_v5_no_v1.yaml", {("data", "synthetic", "style"): "v5"}),
    ("finetune_v5_hours.yaml", {("data", "synthetic", "orthophotos"): 256, ("train", "steps_per_epoch"): 600}),
    ("finetune_v5_colour.yaml", {("train", "augment", "white_balance"): 0.15, ("train", "augment", "saturation"): 0.3}),
])
def test_the_v5_variants_change_only_what_they_study_of_v5s_run(name, changed) -> None:
    """A variant differs from configs/finetune_v5_crop256.yaml in the settings it studies (and where it writes)."""

    def flat(tree: dict, prefix: tuple = ()) -> dict:
        items: dict = {}
        for key, value in tree.items():
            items.update(flat(value, (*prefix, key)) if isinstance(value, dict) else {(*prefix, key): value})
        return items

    base, variant = (flat(to_dict(load_config(CONFIGS / n))) for n in ("finetune_v5_crop256.yaml", name))
    differs = {k: variant.get(k) for k in base.keys() | variant.keys()
               if base.get(k) != variant.get(k) and k[0] not in ("workdir", "export")}
    assert differs == changed


def test_overrides_are_parsed_as_yaml() -> None:
    config = load_config(
        CONFIGS / "smoke.yaml",
        ["train.epochs=7", "train.augment.crop=32", "train.encoder_weights=null", "split.mode=random", "workdir=/x"],
    )
    assert config.train.epochs == 7 and config.train.augment.crop == 32 and config.train.encoder_weights is None
    assert config.split.mode == "random" and config.work == Path("/x")


def test_defaults_apply_and_round_trip() -> None:
    config = build_config({})
    assert config.train.batch_size == 16 and config.train.epochs == 20 and config.patch.size == 256
    assert config.filter.threshold == 0.05 and config.split.mode == "grouped"
    again = build_config(yaml.safe_load(yaml.safe_dump(to_dict(config))))
    assert again == config


def test_data_dir_without_synthetic() -> None:
    config = build_config({"data": {"dir": "/data/landcover.ai"}})
    assert config.data.synthetic is None and config.data_dir == Path("/data/landcover.ai")


@pytest.mark.parametrize(
    "data, match",
    [
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"trian": {}}, "trian"),
        ({"train": {"augment": {"crop": 100}}}, "multiple of 32"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"patch": 5}, "mapping"),
        ({"data": {"synthetic": None}}, "dir"),
    ],
)
def test_bad_configs(data, match) -> None:
    with pytest.raises(TrainingError, match=match):
        build_config(data)


def test_bad_override_syntax() -> None:
    with pytest.raises(TrainingError, match="section.key=value"):
        apply_overrides({}, ["train.epochs"])


def test_missing_or_invalid_file(tmp_path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(TrainingError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
