"""Reliability and security checks measured on a real local stack: fuzzing, overload, replica kill,
training interruption and API-key auth. `python -m dogbooth reliability` runs them (see runner.py);
docs/reliability.md explains each check and the knobs it exercises.
"""

from __future__ import annotations

from dogbooth.core.errors import DogboothError


class ReliabilityError(DogboothError):
    """A reliability check could not run at all (as opposed to a goal missed); says what was wrong."""
