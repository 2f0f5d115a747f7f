"""The project's YAML files (profiles, training configs, SLOs): read and explained the same way.

Every error names the file, and for schema errors the dotted key, so a user can fix it without
reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dogbooth.core.errors import DogboothError


def read_mapping(
    path: Path, error: type[DogboothError], *, expected: str = "a mapping at the top level", empty_ok: bool = False
) -> dict[str, Any]:
    """The YAML mapping in `path`; anything else raises `error` naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from e
    if empty_ok and not data:  # an empty file (or an empty document) is an empty mapping
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}")
    return data


def dump_all(docs: list[dict[str, Any]]) -> str:
    """Documents as one YAML stream, keys in their own order, `---` between them (kubectl/ctlptl/eksctl input)."""
    return yaml.safe_dump_all(docs, sort_keys=False)


def describe(source: str | Path, error: ValidationError) -> str:
    """One line per problem: `source: dotted.key: message`."""
    return "\n".join(
        f"{source}: {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()
    )
