"""One registry type for architectures, datasets and linearization methods (after timm)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # e.g. "dataset", for messages
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} `{name}` is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)
