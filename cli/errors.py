"""The CLI's one failure type: a sentence for the user and an exit status."""

from __future__ import annotations


class CliError(Exception):
    """A failure shown as one sentence on stderr; exit status 1 unless a shell convention says otherwise."""

    def __init__(self, message: str, *, exit_code: int = 1, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.field = field  # the option or argument at fault, when there is one (shown under --json)
