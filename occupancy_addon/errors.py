"""The outcomes the add-on shows the user or acts on, apart from success.

They live in a module of their own, with no imports, so that reading the scene, planning a request
and drawing a panel can raise or catch them without depending on the module that runs the backend
process.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure to show as it is: the message says what happened and what to do next.

    ``crashed`` marks a backend that is gone; the panel then offers to restart it.
    """

    def __init__(self, message: str, crashed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.crashed = crashed


class JobCancelled(Exception):  # noqa: N818 - it is an outcome, not an error
    """The request was cancelled (Esc, the Cancel button, or a newer threshold replaced it)."""


class FieldGoneError(UserError):
    """The backend no longer holds the field a result was made from (evicted, or a new process)."""
