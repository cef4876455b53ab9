"""`python -m bench.profile FILE…`: summarize py-spy speedscope files from `--profile` runs."""

from __future__ import annotations

import sys
from pathlib import Path

from bench._profile import render, summarize

if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(render(summarize(Path(name))))
