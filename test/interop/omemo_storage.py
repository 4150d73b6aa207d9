"""Storage backends for python-omemo used by our interop test user and benchmark.

python-omemo asks its user for a key/value store (omemo.Storage) whose values are JSON. We provide
two: one that keeps everything in a JSON file (so a restarted test user keeps identity, sessions,
device lists and trust) and one that keeps everything in memory (benchmark).

The library caches values itself (Storage's own cache, on by default), so reads reach us once per
key; every write must be durable before the call returns, which the file store does by rewriting
the file (write to a temporary file, then rename over the old one).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict

from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import JSONType


class MemoryStorage(Storage):
    """Everything in a dict; for the benchmark and for tests of the test code."""

    def __init__(self) -> None:
        super().__init__()
        self.data: Dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> Any:
        self.data[key] = value

    async def _delete(self, key: str) -> Any:
        self.data.pop(key, None)


class JsonFileStorage(Storage):
    """Keeps every key of python-omemo's storage in one JSON object in `path`.

    Only one process may use a given file at a time (each test device has its own state directory).
    Besides the library's keys, callers may keep their own under a prefix that the library does not
    use (we use "/interop/...").
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.data: Dict[str, JSONType] = {}
        if os.path.exists(path):
            with open(path, "r", encoding="utf-8") as f:
                loaded = json.load(f)
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: the state file does not hold a JSON object")
            self.data = loaded
        self.writes = 0

    def _flush(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f, separators=(",", ":"), sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self.writes += 1

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> Any:
        self.data[key] = value
        self._flush()

    async def _delete(self, key: str) -> Any:
        if key in self.data:
            del self.data[key]
            self._flush()
