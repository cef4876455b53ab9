"""Scores `relay bounces classify` on the shared real-world corpus and asserts floors.

Runs the shared evaluate.py against the installed `relay` command, on the whole corpus and on
a fixed held-out quarter (samples whose name hashes to 0 mod 4) whose misclassifications were
not studied while the rules were tuned: its score estimates how the rules do on bounces never
seen; "train" is the other three quarters, the ones the rules were tuned on. The floors sit a
little under what the current rules reach, so a regression fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

CORPUS = SHARED / "bounces"
FLOORS = {
    "all": {"recipients": 99.0, "kind": 96.0, "status": 98.5, "reason": 89.5},
    "train": {"recipients": 99.5, "kind": 97.0, "status": 99.0, "reason": 93.5},
    "heldout": {"recipients": 97.5, "kind": 92.5, "status": 97.5, "reason": 77.5},
}


def is_heldout(sample: str) -> bool:
    return int(hashlib.sha1(sample.encode()).hexdigest(), 16) % 4 == 0


def _corpus(split: str, tmp_path: Path) -> Path:
    if split == "all":
        return CORPUS
    (tmp_path / "eml").symlink_to(CORPUS / "eml")
    lines = (CORPUS / "expected.jsonl").read_text().splitlines()
    held = split == "heldout"
    kept = [line for line in lines if is_heldout(json.loads(line)["sample"]) == held]
    (tmp_path / "expected.jsonl").write_text("\n".join(kept) + "\n")
    return tmp_path


@pytest.mark.parametrize("split", ["all", "train", "heldout"])
def test_corpus_scores_hold_their_floors(split: str, tmp_path: Path) -> None:
    relay = Path(sys.executable).parent / "relay"
    proc = subprocess.run(
        [
            sys.executable,
            str(CORPUS / "evaluate.py"),
            str(_corpus(split, tmp_path)),
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
    assert set(scores) == set(FLOORS[split]), summary
    for name, floor in FLOORS[split].items():
        assert scores[name] >= floor, f"{split}: {name} {scores[name]}% < {floor}%: {summary}"
