"""One explicit name -> factory table per component kind.

Components are always chosen by name through a :class:`Registry`, never by if/elif,
so an unknown name fails with the list of valid ones and adding a component is one
``register`` call.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from .errors import check_choice

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def __call__(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@MIXERS("vdn")``."""
        return lambda entry: self.register(name, entry)

    def get(self, name: str) -> T:
        check_choice(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
