"""Objects built from a file, kept while the file stays the same (same resolved path, size and mtime)."""
from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")
_ALL_CACHES: "weakref.WeakSet[FileCache]" = weakref.WeakSet()


class FileCache:
    """Up to `max_entries` objects, one per (file, extra_key); the least recently used goes first. A file that
    changed on disk (size or mtime) is built again and its old object dropped."""

    def __init__(self, max_entries: int):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[tuple[int, int], object]] = OrderedDict()
        _ALL_CACHES.add(self)

    def get(self, path: str | os.PathLike, extra_key: Hashable, build: Callable[[], T]) -> T:
        path = Path(path)
        st = path.stat()
        key = (str(path.resolve()), extra_key)
        stamp = (st.st_size, st.st_mtime_ns)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            self._entries.move_to_end(key)
            return entry[1]
        value = build()
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (stamp, value)
        return value

    def values(self) -> list:
        return [value for _, value in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def clear_all_file_caches() -> int:
    """Drops every cached object of every FileCache (the models our loaders keep between runs); returns how many."""
    dropped = 0
    for cache in list(_ALL_CACHES):
        dropped += len(cache)
        cache.clear()
    return dropped
