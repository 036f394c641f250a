"""Checkpoints: `last.pt` (everything needed to resume) and `best.pt` (the weights of the best epoch).

Both use timm's layout, so `timm.models.load_checkpoint(model, "best.pt")` reads them: the weights under
`state_dict` (and `state_dict_ema` with EMA), plus `epoch`, `arch` and `metric`. What else `last.pt` holds is
`TrainState.state_dict()` (state.py): the optimizer, scheduler and scaler states, the update count, the
random-generator states of every rank, the best score so far, the wall time spent and the resolved config, so a
resumed run continues exactly where it stopped: at an epoch boundary (`batch` 0), or after batch `batch` of the
next epoch when a preempted run saved mid-epoch. This module writes and reads files; it knows no keys but timm's.

Every file is written to a temporary name, flushed to disk and renamed over the old one, so a job killed at any
moment leaves the previous checkpoint readable. Files are read with `torch.load(weights_only=True)`: plain
containers, numbers, strings and tensors only. A file that would build other objects (and so could run code)
is refused, and the model's weights are checked against the configured model before anything is loaded.
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaformer.errors import ConfigError, one_line
from metaformer.pretrained import read_checkpoint

LAST, BEST = "last.pt", "best.pt"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unsafe, unreadable (exit code 1), or not the configured model (2)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message, exit_code)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save `state` to `path` atomically (temporary file, flush, fsync, rename); return the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, weights only; raise `CheckpointError` (one line) if it is unsafe, corrupt
    or unreadable."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(
        path
    ):  # torch.save writes a zip archive; a cut copy is not one
        raise CheckpointError(
            f"{path} is truncated or corrupt (not a complete torch checkpoint); delete it or set resume=false to "
            f"start over, or resume=PATH from another checkpoint"
        )
    try:
        ckpt = read_checkpoint(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(one_line(e)) from e
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'state_dict'); give a run's last.pt")
    return dict(ckpt)


def check_state_dict(
    model: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], path: str | Path, config: Any = None
) -> None:
    """Raise `CheckpointError` naming the mismatching keys unless `saved` has exactly `model`'s keys and shapes."""
    missing = [k for k in model if k not in saved]
    unexpected = [k for k in saved if k not in model]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in model.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing from it {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys {_few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (checkpoint vs model) {_few(shapes)}")
    trained = f" (it was trained with {_describe(config)})" if _describe(config) else ""
    raise CheckpointError(
        f"{path} does not match the configured model{trained}: {'; '.join(parts)}; resume with the config it "
        f"was trained with, or set resume=false to start over",
        exit_code=2,
    )


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"


def _describe(config: Any) -> str:
    if not isinstance(config, Mapping):
        return ""
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    mixer = config.get("mixer")
    mixer = f"[{','.join(map(str, mixer))}]" if isinstance(mixer, list | tuple) else mixer
    parts = [f"model={model.get('name')}", f"mixer={mixer}", f"norm={config.get('norm')}"]
    return " ".join(p for p in parts if not p.endswith("=None"))


def find_resume(resume: bool | str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `resume=true` -> run_dir/last.pt if present; a folder -> its last.pt."""
    if resume in (None, False):
        return None
    if resume is True:
        path = run_dir / LAST
        return path if path.is_file() else None
    path = Path(str(resume)).expanduser()
    return path / LAST if path.is_dir() else path


# Random generators ----------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's random-generator states (torch CPU and CUDA, numpy, Python) as weights-only-safe values."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, gauss = np_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },  # fmt: skip
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generator states `rng_state` returned (CUDA ones only onto as many devices as were saved)."""
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
