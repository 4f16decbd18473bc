"""A small generic registry: decorator registration, did-you-mean, entry points.

One :class:`Registry` instance exists per component kind (encoders, datasets,
metrics). Built-in components register themselves where they are defined with
``@ENCODERS.register("name")``; the package modules that define them are
imported lazily on first lookup. Third-party plugins are discovered through the
standard entry-point group (``cxrbench.encoders`` ...), also lazily, so that
``pip install my-encoder`` makes ``--encoder my-encoder`` work.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate component name. ``str()`` gives the full message."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    source: str  # "builtin" or the distribution/entry point that provided it


def _first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Generic[T]):
    """Name -> component factory.

    Args:
        kind: human name of the component kind, e.g. ``"encoder"``.
        group: entry-point group scanned for third-party plugins.
        package: dotted package whose submodules define the built-ins; they are
            imported the first time the registry is read.
    """

    def __init__(
        self, kind: str, group: str, package: str | None = None, extra_modules: tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.group = group
        self.package = package
        self.extra_modules = extra_modules
        self._entries: dict[str, Entry[T]] = {}
        self._builtins_loaded = package is None
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------
    def register(
        self, name: str, *, description: str | None = None
    ) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``. Duplicate names raise."""

        def deco(obj: T) -> T:
            self.add(name, obj, description=description)
            return obj

        return deco

    def add(
        self, name: str, obj: T, *, description: str | None = None, source: str = "builtin"
    ) -> None:
        if not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._entries:
            prev = self._entries[name]
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: already registered by "
                f"{_describe(prev.obj)} ({prev.source}); pick another name"
            )
        desc = description if description is not None else _first_line(getattr(obj, "__doc__", ""))
        self._entries[name] = Entry(name, obj, desc, source)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- discovery ------------------------------------------------------------
    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        pkg = importlib.import_module(self.package)  # type: ignore[arg-type]
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        for mod in self.extra_modules:
            importlib.import_module(mod)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                # a plugin never replaces a built-in: keep the built-in, say so
                log.warning(
                    "ignoring %s plugin %r (entry point %s): the name is already taken by %s",
                    self.kind, ep.name, ep.value, self._entries[ep.name].source,
                )
                continue
            self._entries[ep.name] = Entry(ep.name, _LazyEntryPoint(ep), "", f"plugin {ep.value}")

    def _ensure(self) -> None:
        self._load_builtins()
        self._load_plugins()

    # -- lookup -------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._entries

    def get(self, name: str) -> T:
        """Return the registered object, loading a plugin entry point if needed."""
        self._ensure()
        if name not in self._entries:
            raise RegistryError(self._unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry.obj, _LazyEntryPoint):
            obj = entry.obj.load()
            desc = _first_line(getattr(obj, "__doc__", ""))
            entry = Entry(name, obj, desc, entry.source)
            self._entries[name] = entry
        return entry.obj

    def entries(self) -> list[Entry[T]]:
        """All entries, plugins loaded so their descriptions are known."""
        out = []
        for name in self.names():
            try:
                self.get(name)
            except Exception as exc:  # a broken plugin must not hide the others
                log.warning("could not load %s plugin %r: %s", self.kind, name, exc)
            out.append(self._entries[name])
        return out

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def _unknown_message(self, name: str) -> str:
        valid = self.names()
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(valid)}. "
            f"Plugins register through the entry-point group {self.group!r}."
        )


class _LazyEntryPoint:
    def __init__(self, ep: Any) -> None:
        self.ep = ep

    def load(self) -> Any:
        return self.ep.load()


def _describe(obj: Any) -> str:
    mod = getattr(obj, "__module__", "?")
    return f"{mod}.{getattr(obj, '__qualname__', type(obj).__name__)}"
