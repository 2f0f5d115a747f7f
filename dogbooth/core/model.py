"""The base of every typed settings model in dogbooth and training/: unknown keys are errors, and a
loaded setting cannot be changed behind the validator's back.

services/schemas.py keeps an identical base of its own (the replica imports nothing of dogbooth);
tests/test_architecture.py checks that the two stay identical.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

STRICT = ConfigDict(extra="forbid", frozen=True)


class Strict(BaseModel):
    model_config = STRICT
