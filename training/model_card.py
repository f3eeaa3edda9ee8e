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
        f"**Trained on {bundle.provenance.get('data', 'unknown data')}.** The scenes imitate LandCover.ai's classes "
        "and class balance, but they are not real orthophotos: this model is for demos, tests and installation "
        "checks, not for real maps. For real maps run the pipeline on LandCover.ai (see training/README.md).",
        "",
        "## Training",
        "",
        f"- Data: {train_info['data']['train']} train / {train_info['data']['val']} validation patches "
        "(split grouped by source orthophoto).",
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


def write_model_card(path: Path, bundle_json: Path, report: dict[str, Any] | None, train_info: dict[str, Any],
                     command: str) -> Path:
    """Write the card to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, model_card(bundle_json, report, train_info, command))
    return path
