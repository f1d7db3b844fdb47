"""Named paths below an object's directory, declared once as a table instead of a property each."""

from __future__ import annotations

from pathlib import Path
from typing import Any, overload


class Below:
    """A read-only attribute: `socket = Below("dir", "containerd.sock")` reads as
    `self.dir / "containerd.sock"`. The base is looked up on every read, so it may be set
    after the object is made (a temp dir made by `start()`)."""

    def __init__(self, base: str, *parts: str) -> None:
        self.base = base
        self.parts = parts

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Below: ...
    @overload
    def __get__(self, obj: Any, owner: type | None = None) -> Path: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Path | Below:
        if obj is None:
            return self
        return Path(getattr(obj, self.base)).joinpath(*self.parts)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{'/'.join(self.parts)} is a path below {self.base}: set {self.base}")
