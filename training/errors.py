"""Training errors: subclasses of dogbooth's base error, so the CLI prints them without a traceback."""

from __future__ import annotations

from dogbooth.core.errors import DogboothError


class TrainingError(DogboothError):
    """A training run cannot start or continue; the message says what to change."""


class TrainingConfigError(TrainingError):
    """A training config is missing or invalid; the message names the file (or flag) and the key."""


class DataError(TrainingError):
    """Instance or class images are unusable; the message names the file or folder."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be resumed from."""
