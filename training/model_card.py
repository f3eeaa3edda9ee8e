"""A short Markdown model card for an exported bundle: data, training, per-class metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.contract import write_text_atomic
from training.evaluate import markdown_table

#: The seed notebook's results on real LandCover.ai evaluation patches: (accuracy, macro-F1).
SEED_RESULTS = {("Unet", "resnet18"): (0.870, 0.830), ("Unet", "resnet50"): (0.864, 0.824),
                ("FPN", "resnet18"): (0.879, 0.830)}


def model_card(bundle_json: Path, report: dict[str, Any] | None, train_info: dict[str, Any], command: str,
               checks: dict[str, Any] | None = None) -> str:
    """The card as Markdown; ``checks`` may hold ``held_out`` and ``sanity`` results of the exported bundle."""
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
        _data_paragraph(bundle.provenance),
        "",
        "## Training",
        "",
        f"- Data: {_data_line(bundle.provenance.get('config') or {})}{train_info['data']['train']} train / "
        f"{train_info['data']['val']} validation patches ({_split_words(bundle.provenance.get('config') or {})}).",
        f"- {params.get('epochs')} epochs x {train_info.get('steps_per_epoch')} steps, batch {params.get('batch_size')}"
        f", Adam lr {params.get('learning_rate')}{' with cosine decay' if params.get('cosine_decay') else ''}, "
        "categorical focal + Jaccard loss, "
        + (f"starting from `{params['init_weights']}` (fine-tuned)." if params.get("init_weights") else
           f"encoder weights: {params.get('encoder_weights') or 'none (random init)'}."),
        f"- Augmentation: 90-degree rotations, flips, shifts up to {aug.get('shift')} with reflect fill"
        + (f", random {aug.get('crop')} px crops" if aug.get("crop") else "")
        + (f", brightness {aug.get('brightness')} / contrast {aug.get('contrast')} jitter" if aug.get("brightness")
           or aug.get("contrast") else "")
        + (f", white-balance {aug.get('white_balance')} / saturation {aug.get('saturation')} jitter"
           if aug.get("white_balance") or aug.get("saturation") else "")
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
    lines += _checks(checks or {})
    lines += _seed_comparison(bundle.architecture, bundle.backbone, (report or {}).get("patches"),
                              bundle.provenance.get("config") or {})
    return "\n".join(lines)


def _checks(checks: dict[str, Any]) -> list[str]:
    """The held-out synthetic benchmark and the real-scene sanity suite, when the run made them."""
    from training import heldout, sanity

    lines: list[str] = []
    if checks.get("held_out"):
        first = next(iter(checks["held_out"].values()))
        lines += ["## Fresh synthetic scenes per style (float export)", "",
                  f"New scenes (seed {first['seed']}, never trained on) through the backend's tiled inference "
                  "(`python -m training heldout`):", "", heldout.markdown(checks["held_out"])]
    if checks.get("sanity"):
        lines += ["## Real-scene sanity suite (float export)", "",
                  "Real rasters without masks: classes a person sees are certainly absent or present "
                  "(`python -m training sanity`).", "", sanity.report(checks["sanity"], "this bundle")]
    return lines


def _data_paragraph(provenance: dict[str, Any]) -> str:
    """What the model was trained on, and what that means for its use."""
    data = provenance.get("data", "unknown data")
    if ((provenance.get("config") or {}).get("data") or {}).get("synthetic"):
        return (f"**Trained on {data}.** Synthetic scenes imitate LandCover.ai's classes and class balance but are "
                "not real orthophotos: use this model for demos, tests and installation checks only. For real maps "
                "run the pipeline on LandCover.ai (see training/README.md).")
    return f"**Trained on {data}.**"


def _seed_comparison(architecture: str, backbone: str, patches: dict[str, Any] | None,
                     config: dict[str, Any]) -> list[str]:
    """The seed notebook's figures for the same network beside this run's (eval patches), with the split used."""
    seed = SEED_RESULTS.get((architecture, backbone))
    if seed is None or not patches:
        return []
    split = (config.get("split") or {}).get("mode", "grouped")
    return [
        "## Compared with the seed notebook",
        "",
        f"Same network ({architecture} / {backbone}); the seed's figures are on its own LandCover.ai evaluation "
        f"patches (random split), this run's on its eval patches ({split} split).",
        "",
        "| | accuracy | macro-F1 |",
        "| --- | ---: | ---: |",
        f"| seed notebook | {seed[0]:.3f} | {seed[1]:.3f} |",
        f"| this run | {patches['accuracy']:.3f} | {patches['macro_f1']:.3f} |",
        "",
    ]


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
                     command: str, checks: dict[str, Any] | None = None) -> Path:
    """Write the card to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, model_card(bundle_json, report, train_info, command, checks))
    return path


def _split_words(config: dict) -> str:
    """How the patches were split, in words, from the run's config."""
    mode = (config.get("split") or {}).get("mode", "grouped")
    return {"grouped": "split grouped by source orthophoto",
            "random": "patch-level random split, as in the seed notebook",
            "official": "LandCover.ai's official train/val/test tile lists; patches across two lists left out"}.get(
                mode, f"{mode} split")
