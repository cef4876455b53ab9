"""Scores `relay bounces classify` on the shared real-world corpus and asserts floors.

Runs the shared evaluate.py against the installed `relay` command; the floors sit a little
under what the current rules reach, so a regression fails the build.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED

CORPUS = SHARED / "bounces"
FLOORS = {"recipients": 95.5, "kind": 89.0, "status": 93.0, "reason": 68.0}


def test_corpus_scores_hold_their_floors() -> None:
    relay = Path(sys.executable).parent / "relay"
    proc = subprocess.run(
        [
            sys.executable,
            str(CORPUS / "evaluate.py"),
            str(CORPUS),
            "--split",
            "all",
            "--",
            str(relay),
            "bounces",
            "classify",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    summary = proc.stdout.strip().splitlines()[-1]
    scores = {
        name: float(value)
        for name, value in re.findall(r"(recipients|kind|status|reason) (\d+\.\d)%", summary)
    }
    assert set(scores) == set(FLOORS), summary
    for name, floor in FLOORS.items():
        assert scores[name] >= floor, f"{name} {scores[name]}% < {floor}%: {summary}"
