"""One base exception for the project; each subclass is an error a user can act on."""

from __future__ import annotations


class DogboothError(Exception):
    """Base of every error dogbooth raises on purpose. The CLI prints it without a traceback."""


class ProfileError(DogboothError):
    """A profile file is missing or invalid; the message names the file and the key."""


class BringUpError(DogboothError):
    """A stack did not come up (or down); the message says what is stuck and where the logs are."""


class ChartError(DogboothError):
    """The Helm chart did not render, or a manifest failed schema validation; the message says where."""


class CommandFailed(DogboothError):
    """An external command exited non-zero; carries the command and its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv, self.returncode, self.stderr = argv, returncode, stderr
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        super().__init__(f"`{' '.join(argv)}` exited {returncode}:\n{tail}")


class MissingTools(DogboothError):
    """Required command-line tools are absent or too old; lists all of them at once with install hints."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} required tool(s) missing or too old:\n{lines}")
