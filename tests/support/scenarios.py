"""The scenario library, for tests that replay it through the command line."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import analyzer

SCENARIO_DIR = Path(analyzer.__file__).parent / "scenarios"


def copy_library(destination: Path, *, leave_out: Iterable[str] = ()) -> Path:
    """Every scenario file of the library under `destination` (subfolders kept), apart from the ids
    in `leave_out`: the known bugs a test about something else must not trip over."""
    left_out = set(leave_out)
    for path in sorted(SCENARIO_DIR.rglob("*.json")):
        if path.stem in left_out:
            continue
        target = destination / path.relative_to(SCENARIO_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return destination
