"""Checkpoints: `last.pt` (everything needed to resume) and `best.pt` (the weights of the best epoch).

Both use timm's layout, so `timm.models.load_checkpoint(model, "best.pt")` reads them: the weights under
`state_dict` (and `state_dict_ema` with EMA), plus `epoch`, `arch` and `metric`. `last.pt` adds the optimizer,
scheduler and scaler states, the best score so far and the wall time spent, so a resumed run continues where it
stopped (random generators are reseeded from seed and epoch at every epoch, so they need no saving). Files are written to a temporary name and renamed, so a preempted job never leaves half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save `state` to `path` atomically; return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU."""
    # Our own files: they hold the config and scheduler state, which weights_only=True may refuse.
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def find_resume(resume: bool | str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `resume=true` -> run_dir/last.pt if present; a folder -> its last.pt."""
    if resume in (None, False):
        return None
    if resume is True:
        path = run_dir / LAST
        return path if path.is_file() else None
    path = Path(str(resume)).expanduser()
    return path / LAST if path.is_dir() else path
