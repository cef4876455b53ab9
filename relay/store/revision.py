"""Developer tool: autogenerate a migration from the difference between tables.py and head.

Usage: `python -m relay.store.revision "what changed"`. Builds a scratch SQLite database at
the current head, compares it with `tables.metadata` and writes migrations/versions/NNNN_*.py.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from relay.store.db import MIGRATIONS_DIR, migrations_config


def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scratch.db"
        cfg = migrations_config(url)
        script = ScriptDirectory.from_config(cfg)
        if script.get_current_head() is not None:
            command.upgrade(cfg, "head")
        number = len(list(script.walk_revisions())) + 1
        slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
        command.revision(
            cfg,
            message=message,
            autogenerate=True,
            rev_id=f"{number:04d}",
            version_path=str(MIGRATIONS_DIR / "versions"),
        )
        made = next((MIGRATIONS_DIR / "versions").glob(f"{number:04d}_*.py"))
        made.rename(made.with_name(f"{number:04d}_{slug}.py"))
        print(f"wrote {Path(made.with_name(f'{number:04d}_{slug}.py')).relative_to(Path.cwd())}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m relay.store.revision MESSAGE")
    main(sys.argv[1])
