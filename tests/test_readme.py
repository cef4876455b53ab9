"""The README's configuration reference matches the config schema: every key (and no other),
each default as the schema has it, and the SIGHUP column as relay.reloading applies it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from relay import config
from relay.reloading import RELOADABLE

README = Path(__file__).resolve().parent.parent / "README.md"


def _reference() -> dict[str, tuple[str, str]]:
    text = README.read_text()
    start = text.index("### Configuration reference")
    rows: dict[str, tuple[str, str]] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        m = re.match(r"^\| `([a-z_.\[\]]+)` \| (.+?) \| (reloads|restart) \|", line)
        if m:
            key, default, reload = m.groups()
            assert key not in rows, f"{key} listed twice"
            rows[key] = (default, reload)
    return rows


def _schema() -> dict[str, tuple[type[BaseModel], str]]:
    """'section.key' (or 'section.list[].key') → (the model that holds it, the field name)."""
    keys: dict[str, tuple[type[BaseModel], str]] = {"data_dir": (config.Config, "data_dir")}
    for section, field in config.Config.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            inner = getattr(sub.annotation, "__args__", (None,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                for k in inner.model_fields:
                    keys[f"{section}.{name}[].{k}"] = (inner, k)
            else:
                keys[f"{section}.{name}"] = (model, name)
    return keys


def test_reference_lists_every_key_of_the_schema() -> None:
    assert sorted(_reference()) == sorted(_schema())


def test_reference_defaults_are_the_schema_defaults() -> None:
    schema = _schema()
    for key, (default, _) in _reference().items():
        model, name = schema[key]
        field = model.model_fields[name]
        if default == "required":
            assert field.is_required(), key
            continue
        literal = tomllib.loads(f"v = {default.strip('`')}")["v"]
        # Validate through the field's own type, so "5m" and 300.0 compare equal.
        parsed: Any = model.__pydantic_validator__.validate_assignment(
            model.model_construct(), name, literal
        )
        assert getattr(parsed, name) == field.get_default(call_default_factory=True), key


def test_reference_marks_exactly_the_reloadable_keys() -> None:
    marked = {k for k, (_, reload) in _reference().items() if reload == "reloads"}
    assert marked == set(RELOADABLE)
