"""What every subcommand gets: the config (loaded once, lazily) and an open database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from relay import config as config_module
from relay.config import Config
from relay.store.db import Database, check_schema


@dataclass
class Context:
    config_path: str | None
    json: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = config_module.load(self.config_path)
        return self._config

    @asynccontextmanager
    async def database(self, check: bool = True) -> AsyncIterator[Database]:
        """An open database; with `check`, refuse unless the schema is at head."""
        db = Database.from_config(self.config.database)
        try:
            if check:
                await check_schema(db.engine)
            yield db
        finally:
            await db.dispose()
