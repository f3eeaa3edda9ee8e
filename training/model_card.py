"""A short Markdown model card for an exported bundle: data, training, per-class metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.evaluate import markdown_table
from training.filter import write_text


def model_card(bundle_json: Path, report: dict[str, Any] | None, train_info: dict[str, Any], command: str) -> str:
    """The card as Markdown."""
    from backend.bundle import load_bundle

    bundle = load_bundle(bundle_json)
    params = train_info.get("params", {})
    aug = params.get("augment", {})
    minutes = (train_info.get("seconds") or 0) / 60
    lines = [
        f"# Model card: {bundle.name}",
        "",
        f"Bundle: `{Path(bundle_json).as_posix()}` + `{bundle.weights.name if bundle.weights else ''}`"
        f" ({bundle.architecture} / {bundle.backbone}, {bundle.input_bands} bands, tile {bundle.tile_size} px,"
        f" {bundle.gsd_m} m/px, float16 weights).",
        "",
        f"**Trained on {bundle.provenance.get('data', 'unknown data')}.** Synthetic scenes imitate LandCover.ai's "
        "classes and class balance but are not real orthophotos: use this model for demos, tests and installation "
        "checks only. For real maps run the pipeline on LandCover.ai (see training/README.md).",
        "",
        "## Training",
        "",
        f"- Data: {_data_line(bundle.provenance.get('config') or {})}{train_info['data']['train']} train / "
        f"{train_info['data']['val']} validation patches (split grouped by source orthophoto).",
        f"- {params.get('epochs')} epochs x {train_info.get('steps_per_epoch')} steps, batch {params.get('batch_size')}"
        f", Adam lr {params.get('learning_rate')}{' with cosine decay' if params.get('cosine_decay') else ''}, "
        "categorical focal + Jaccard loss, encoder weights: "
        f"{params.get('encoder_weights') or 'none (random init)'}.",
        f"- Augmentation: 90-degree rotations, flips, shifts up to {aug.get('shift')} with reflect fill"
        + (f", random {aug.get('crop')} px crops" if aug.get("crop") else "")
        + (f", brightness {aug.get('brightness')} / contrast {aug.get('contrast')} jitter" if aug.get("brightness")
           or aug.get("contrast") else "")
        + ".",
        f"- Best validation mIoU {(train_info.get('best') or {}).get('val_miou', float('nan')):.4f} at epoch "
        f"{(train_info.get('best') or {}).get('epoch')}; training took {minutes:.0f} min on the CPU.",
        f"- Reproduce: `{command}`.",
        "",
    ]
    if report:
        titles = {"orthophotos": "Whole held-out orthophotos, through the backend's tiled inference",
                  "patches": "Eval patches (256 px)"}
        for scope in ("orthophotos", "patches"):
            s = report.get(scope)
            if s:
                lines += [f"## {titles[scope]}", "", f"Evaluated on {s['evaluated_on']}.", "", markdown_table(s), ""]
    return "\n".join(lines)


def _data_line(config: dict[str, Any]) -> str:
    """``48 synthetic orthophotos of 1024 px (seed 0), 256 px patches, ... ->`` from the resolved config."""
    syn = (config.get("data") or {}).get("synthetic")
    patch, filt = config.get("patch") or {}, config.get("filter") or {}
    if not syn or not patch:
        return ""
    return (
        f"{syn['orthophotos']} synthetic orthophotos of {syn['size']} px (seed {syn['seed']}), cut into "
        f"{patch['size']} px patches, kept when over {filt.get('threshold', 0.05):.0%} non-background "
        f"(plus {filt.get('keep_background', 0):.0%} of the rest) -> "
    )


def write_model_card(path: Path, bundle_json: Path, report: dict[str, Any] | None, train_info: dict[str, Any],
                     command: str) -> Path:
    """Write the card to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, model_card(bundle_json, report, train_info, command))
    return path
