"""Many rasters in one run: the worker's ``batch`` command (Dask), for Processing's ``landcover:segment_batch``.

Pure Python (no QGIS imports), like :mod:`landcover_plugin.runner`, which starts the worker, reads its protocol
lines and cancels it. The backend plans the items (a sheet, or a chunk of a large mosaic), runs them on a Dask
cluster, and writes every output into one folder; a failed item does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runner
from .contract import (
    BACKEND_PARENT,
    BATCH_AREAS_CSV,
    BATCH_AREAS_JSON,
    STAGE_BATCH,
    BatchArgs,
    DoneEvent,
    Event,
    InfoEvent,
    InternalError,
    ProgressEvent,
    WarningEvent,
)


@dataclass
class BatchOutcome:
    """What a successful batch wrote: every item's class raster, the mosaic over them and the area tables."""

    outdir: Path
    mosaic: Path | None  # mosaic.vrt (with mosaic.qml beside it)
    areas: dict[str, Any]  # the totals, shaped like segment's areas
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # e.g. sheets left out of the mosaic
    log: list[str] = field(default_factory=list)

    @property
    def areas_json(self) -> Path:
        return self.outdir / BATCH_AREAS_JSON

    @property
    def areas_csv(self) -> Path:
        return self.outdir / BATCH_AREAS_CSV


def run(request: BatchArgs, python: str, env: dict[str, str],
        progress: Callable[[float, str], None] = lambda p, m: None,
        warn: Callable[[str], None] = lambda m: None,
        info: Callable[[str], None] = lambda m: None,
        is_canceled: Callable[[], bool] = lambda: False) -> BatchOutcome:
    """Run a batch in the worker (blocking): ``progress(percent, message)`` per finished item (percent -1: only a
    message), ``warn`` for each item that failed, ``info`` for the summary.

    Raises:
        CancelledError: cancelled; the worker was stopped (items finished so far stay in the folder).
        LandcoverError: the worker's error; when items failed, an ``input`` error naming them (the items that
            succeeded stay in the folder).
    """
    progress(0, "checking the worker Python")
    runner.check_runtime(python, env)

    def on_event(event: Event) -> None:
        if isinstance(event, ProgressEvent):
            if event.percent is not None:
                text = event.message or f"{event.done} of {event.total} items"
                progress(event.percent, text if event.stage == STAGE_BATCH else f"{event.stage}: {text}")
            elif event.message:
                progress(-1, event.message)
        elif isinstance(event, WarningEvent):
            warn(event.message)
        elif isinstance(event, InfoEvent):
            info(event.message)

    # No OutputGuard: a failed or cancelled batch keeps the items it finished (RESUME continues from them).
    result = runner.run_worker(request.command(python), env, cwd=str(BACKEND_PARENT), on_event=on_event,
                               is_canceled=is_canceled)
    done: DoneEvent | None = result.done
    if done is None:  # pragma: no cover - the worker ends a successful run with its done event
        raise InternalError("the worker finished the batch without a result", "\n".join(result.log))
    output = Path(done.output)
    mosaic = output if output.suffix.lower() == ".vrt" and output.is_file() else None
    return BatchOutcome(Path(request.outdir), mosaic, dict(done.areas), done.seconds, list(done.warnings),
                        result.log)
