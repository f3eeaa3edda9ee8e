"""The pipeline config: a YAML file of sections, each one step's parameters, plus CLI overrides.

Sections: ``workdir``, ``data`` (``dir`` of a LandCover.ai-layout folder, or ``synthetic`` settings),
``patch``, ``filter``, ``split``, ``train`` (with ``augment``), ``evaluate``, ``export``. Every key is
optional (the dataclass defaults apply); unknown keys are errors, so typos do not pass silently.
Overrides are ``section.key=value`` strings whose value is parsed as YAML (``train.epochs=3``,
``train.augment.crop=128``, ``data.dir=null``). Relative paths are relative to the working directory.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.augment import AugmentParams
from training.errors import TrainingError
from training.export import ExportParams
from training.filter import FilterParams
from training.patch import PatchParams
from training.split import SplitParams
from training.synthetic import ClassShares, SyntheticParams
from training.train import TrainParams


@dataclass(frozen=True)
class DataConfig:
    """Where the orthophotos come from: an existing folder, or synthetic scenes made into the workdir."""

    dir: str | None = None
    synthetic: SyntheticParams | None = None

    def __post_init__(self) -> None:
        if self.dir is None and self.synthetic is None:
            raise TrainingError("config data needs 'dir' (a LandCover.ai-layout folder) or 'synthetic' settings")


@dataclass(frozen=True)
class EvaluateParams:
    """Evaluation settings."""

    examples: int = 6  # patches drawn in the example figure
    orthophotos: bool = True  # also segment whole held-out orthophotos through the backend
    max_orthophotos: int | None = None
    overlap: int | None = None  # tiled inference overlap (None: the bundle's default)
    batch_size: int = 8
    #: After export, score the bundle on this many fresh synthetic scenes per style (training/heldout.py; 0: no).
    held_out_scenes: int = 0
    #: After export, check the bundle against this real-scene expectations file (training/sanity.py; null: no).
    sanity: str | None = None

    def __post_init__(self) -> None:
        if self.examples < 0 or self.batch_size < 1:
            raise TrainingError("evaluate examples must be >= 0 and batch_size >= 1")
        if not 0 <= self.held_out_scenes <= 64:
            raise TrainingError(f"evaluate held_out_scenes must be 0..64, got {self.held_out_scenes}")


@dataclass(frozen=True)
class ExportConfig:
    """Where the bundle goes, plus its metadata."""

    out: str | None = None  # None: WORKDIR/bundle/landcover.json
    params: ExportParams = field(default_factory=ExportParams)
    model_card: str | None = None  # also write a Markdown model card here


@dataclass(frozen=True)
class PipelineConfig:
    """Every step's parameters."""

    workdir: str = "runs/default"
    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=SyntheticParams()))
    patch: PatchParams = field(default_factory=PatchParams)
    filter: FilterParams = field(default_factory=FilterParams)
    split: SplitParams = field(default_factory=SplitParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        declared, trained = self.export.params.gsd_m, self.patch.gsd_m
        if declared is not None and trained is not None and abs(declared / trained - 1) > 0.01:
            raise TrainingError(
                f"export.params.gsd_m {declared} contradicts patch.gsd_m {trained}: the model learns the pixel size "
                "the patches are resampled to; leave export.params.gsd_m out (it then follows patch.gsd_m)"
            )

    @property
    def work(self) -> Path:
        return Path(self.workdir)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir) if self.data.dir else self.work / "data"

    @property
    def bundle_json(self) -> Path:
        return Path(self.export.out) if self.export.out else self.work / "bundle" / "landcover.json"


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into dataclass-typed fields; reject unknown keys."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TrainingError(f"config section {where or 'top level'} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TrainingError(
            f"unknown config key(s) {', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}; "
            f"valid keys: {', '.join(fields)}"
        )
    nested = {
        ("DataConfig", "synthetic"): SyntheticParams,
        ("SyntheticParams", "shares"): ClassShares,
        ("TrainParams", "augment"): AugmentParams,
        ("ExportConfig", "params"): ExportParams,
        ("PipelineConfig", "data"): DataConfig,
        ("PipelineConfig", "patch"): PatchParams,
        ("PipelineConfig", "filter"): FilterParams,
        ("PipelineConfig", "split"): SplitParams,
        ("PipelineConfig", "train"): TrainParams,
        ("PipelineConfig", "evaluate"): EvaluateParams,
        ("PipelineConfig", "export"): ExportConfig,
    }
    kwargs = {}
    for key, value in values.items():
        sub = nested.get((cls.__name__, key))
        if sub is not None and not (value is None and key == "synthetic"):
            value = _build(sub, value, f"{where}.{key}".lstrip("."))
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TrainingError(f"config section {where or 'top level'}: {exc}") from exc


def load_yaml(path: Path | str | None) -> dict[str, Any]:
    """The raw mapping of a YAML config file (empty for None)."""
    import yaml

    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"config file {path} does not exist; see training/configs/ for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainingError(f"config file {path} is not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"config file {path} must be a mapping of sections")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    import yaml

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise TrainingError(f"override {item!r} is not of the form section.key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise TrainingError(f"override {item!r} names no key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise TrainingError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def build_config(data: dict[str, Any]) -> PipelineConfig:
    """Validate a raw mapping into a :class:`PipelineConfig`."""
    return _build(PipelineConfig, data, "")


def load_config(path: Path | str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config and apply overrides."""
    return build_config(apply_overrides(load_yaml(path), overrides or []))


def to_dict(config: Any) -> Any:
    """The resolved config as plain YAML-friendly data."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, list | tuple):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config
