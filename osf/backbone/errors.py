"""The error a backbone checkpoint that cannot be used raises, shared by the file readers and the Hub resolver."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A backbone checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.source = str(path)  # as given: Path() would fold an hf:// URI's "//"
        self.problem = problem
        super().__init__(f"backbone checkpoint {self.source}: {problem}")
