"""``app.conf``: the layered, lazily loaded settings object, its printed forms and the censoring of secrets.

A read looks in three layers, highest first: the run-time **changes** (``conf.x = v``, ``update()``, the
app's constructor arguments), the **source** given to ``config_from_object()`` (imported on the first
read), and the **defaults** of :mod:`minicelery.defaults`.

Celery's counterparts: ``Settings``, ``detect_settings`` and ``filter_hidden_settings`` in
``celery.app.utils``, ``PendingConfiguration`` in ``celery.app.base``. Differences: run-time changes beat
the source even when a source is loaded after the first read (Celery drops them); every read path applies
the environment overrides and derived defaults (Celery: attribute reads only); ``repr()`` does not load;
no ``deprecated_settings`` key; every URL's password is masked. Left out: ``add_defaults``,
``find_option``, deprecation warnings for old setting names. See docs/configuration.md.
The censoring (and the URL parsing it uses) is imported by the printed forms, on first use (issue 9).
"""

from __future__ import annotations

import copy
import os
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, cast

from .defaults import DEFAULTS, NEW_TO_OLD, OLD_TO_NEW, SETTINGS
from .exceptions import ImproperlyConfigured
from .imports import import_object

__all__ = ["Settings", "canonical_name", "lookup_names"]

_DICT_MEMBERS = frozenset(dir(dict))  # table() hides keys such as 'items' or 'update', like Celery

# Celery's exact texts (celery.app.utils), each rename line formatted as '{old:<36} -> {new}'.
E_MIX_OLD_INTO_NEW = ("\n\nCannot mix new and old setting keys, please rename the\n"
                      "following settings to the new format:\n\n{renames}\n\n")
E_MIX_NEW_INTO_OLD = ("\n\nCannot mix new setting names with old setting names, please\n"
                      "rename the following settings to use the old format:\n\n{renames}\n\n"
                      "Or change all of the settings to use the new format :)\n\n")


def _match_case(text: str, prefix: str) -> str:
    return text.upper() if prefix.isupper() else text.lower()


class _ObjectSource(Mapping[str, Any]):
    """A module, class or instance read as a mapping of its public attributes (Celery's DictAttribute)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key.startswith("_"):
            raise KeyError(key)
        try:
            return getattr(self.obj, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return (name for name in dir(self.obj) if not name.startswith("_"))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _resolve_source(obj: Any, silent: bool) -> Mapping[Any, Any]:
    """Turn what ``config_from_object`` was given into a mapping; an import error gives ``{}`` if silent."""
    if isinstance(obj, str):
        try:
            obj = import_object(obj)
        except ImportError:
            if silent:
                return {}
            raise
    return obj if isinstance(obj, Mapping) else _ObjectSource(obj)


def _check_styles(keys: Iterable[Any]) -> None:
    """Refuse a source that mixes old UPPERCASE and new lowercase setting names (Celery's rule).

    The majority style wins (new on a tie); a key of the other style is an error unless its counterpart
    is present too.
    """
    have = {key for key in keys if isinstance(key, str)}
    new, old = have & SETTINGS.keys(), have & OLD_TO_NEW.keys()
    if len(old) > len(new):
        left, convert, template = new, NEW_TO_OLD, E_MIX_NEW_INTO_OLD
    else:
        left, convert, template = old, OLD_TO_NEW, E_MIX_OLD_INTO_NEW
    really_left = sorted(key for key in left if convert[key] not in have)
    if really_left:
        renames = "\n".join(f"{key:<36} -> {convert[key]}" for key in really_left)
        raise ImproperlyConfigured(template.format(renames=renames))


def _first(value: Any, fallback: Callable[[], Any]) -> Any:
    return fallback() if value is None else value


# Settings whose value is computed when read, by canonical name. Environment variables win over
# everything, as in Celery, so a deployment can point a packaged configuration at another broker.
_DERIVED: dict[str, Callable[[Settings], Any]] = {
    "broker_url": lambda c: os.environ.get("CELERY_BROKER_URL") or c._raw("broker_url"),
    "broker_read_url": lambda c: (os.environ.get("CELERY_BROKER_READ_URL") or c._raw("broker_read_url")
                                  or c._read("broker_url")),
    "broker_write_url": lambda c: (os.environ.get("CELERY_BROKER_WRITE_URL") or c._raw("broker_write_url")
                                   or c._read("broker_url")),
    "result_backend": lambda c: os.environ.get("CELERY_RESULT_BACKEND") or c._raw("result_backend"),
    "task_default_exchange": lambda c: _first(c._raw("task_default_exchange"),
                                              lambda: c._read("task_default_queue")),
    "task_default_routing_key": lambda c: _first(c._raw("task_default_routing_key"),
                                                 lambda: c._read("task_default_queue")),
    "timezone": lambda c: _first(c._raw("timezone"), lambda: c.get("time_zone")),  # Django's name
}


def lookup_names(key: Any, prefix: str | None) -> tuple[Any, ...]:
    """The names ``key`` is looked up under in each layer, in order: with the namespace prefix (in the
    prefix's case), bare, then its old or new spelling (``CELERY_TASK_SERIALIZER``/``task_serializer``)."""
    if not isinstance(key, str):
        return (key,)
    names: list[str | None] = [key, NEW_TO_OLD.get(key), OLD_TO_NEW.get(key)]
    if prefix:
        prefixed = key if key.startswith(prefix) else prefix + key
        names.insert(0, _match_case(prefixed, prefix))
    return tuple(dict.fromkeys(name for name in names if name))


def canonical_name(key: Any, prefix: str | None) -> Any:
    """The new-style, unprefixed name of ``key``, so that one setting is listed once."""
    if not isinstance(key, str) or key in OLD_TO_NEW:
        return OLD_TO_NEW.get(key, key)
    if prefix and key.startswith(prefix) and key == _match_case(key, prefix):
        key = key[len(prefix):].lower()
    return key


class Settings:
    """The configuration of an app: ``app.conf``.

    Read a setting as ``conf.task_serializer`` or ``conf['task_serializer']``; write it the same way or
    with ``update()``. Writes go to the run-time changes and never load anything; the first read loads
    the source given to ``config_from_object()`` and then calls each function in ``on_load`` once.
    Attribute names that start with ``_`` are the object's own: such a setting is read and written as
    ``conf['_name']``.

    Args:
        changes: initial run-time changes (the app's constructor arguments).
        namespace: a prefix such as ``'CELERY'``: ``task_serializer`` is then looked up first as
            ``CELERY_TASK_SERIALIZER``, in each layer.
    """

    def __init__(self, changes: Mapping[Any, Any] | None = None, *, namespace: str | None = None) -> None:
        # The layers, highest first; the defaults are a private copy, since they hold mutable dicts.
        self._layers: ChainMap[Any, Any] = ChainMap(dict(changes or {}), {}, copy.deepcopy(DEFAULTS))
        self._pending: tuple[Any, bool] | None = None  # (obj, silent) of a source not loaded yet
        self._prefix: str | None = None
        self._loaded = False
        self.on_load: list[Callable[[Settings], Any]] = []
        self._set_namespace(namespace)

    @property
    def loaded(self) -> bool:
        """True once the source has been read (``app.configured``)."""
        return self._loaded

    @property
    def changes(self) -> Mapping[Any, Any]:
        """The run-time changes, the highest layer (a read-only view: write through the settings)."""
        return MappingProxyType(self._changes)

    @property
    def _changes(self) -> MutableMapping[Any, Any]:
        return self._layers.maps[0]

    @property
    def _source(self) -> Mapping[Any, Any]:
        return self._layers.maps[1]

    @property
    def namespace(self) -> str | None:
        """The key prefix without its underscore (``'CELERY'``), or None."""
        return self._prefix[:-1] if self._prefix else None

    def _set_namespace(self, namespace: str | None) -> None:
        if namespace:
            self._prefix = namespace.rstrip("_") + "_"

    def load(self) -> None:
        """Read the pending source now, if not done yet, then call the ``on_load`` functions once.

        Raises:
            ModuleNotFoundError: the source names a module or attribute that does not exist.
            ImproperlyConfigured: the source mixes old and new setting names.
        """
        if self._loaded:
            return
        if self._pending is not None:
            self._use_source(*self._pending)
        self._loaded = True
        for callback in self.on_load:
            callback(self)

    def config_from_object(self, obj: Any, *, namespace: str | None = None, silent: bool = False,
                           force: bool = False) -> None:
        """Use ``obj`` as the source, replacing any previous one; run-time changes still win over it.

        ``obj`` is a module name (``'proj.celeryconfig'``), ``'module:attr'``, ``'module.Attr'``, a module,
        a class, an instance or a mapping. It is read on the first read of a setting, or at once when
        ``force`` is true or the settings are already loaded; if it fails then, nothing changes.

        Raises:
            ModuleNotFoundError: (when loading now) the module or attribute does not exist, unless silent.
        """
        self._set_namespace(namespace)
        if force or self._loaded:
            self._use_source(obj, silent)
            self.load()
        else:
            self._pending = (obj, silent)

    def _use_source(self, obj: Any, silent: bool) -> None:
        source = _resolve_source(obj, silent)
        if not self._prefix:  # with a namespace, new names are assumed (as in Celery)
            _check_styles(source)
        self._layers.maps[1] = cast("MutableMapping[Any, Any]", source)  # only ever read
        self._pending = None

    # -- lookups --------------------------------------------------------------------------------------

    def _raw(self, key: Any) -> Any:
        """The stored value of ``key`` from the highest layer that has it, without derivations."""
        self.load()
        names = lookup_names(key, self._prefix)
        for layer in self._layers.maps:
            for name in names:
                if name in layer:
                    return layer[name]
        if self._prefix and len(names) > 1:
            raise KeyError(f"Key not found: {key!r} (with prefix: {names[0]!r})")
        raise KeyError(key)

    def _read(self, key: Any) -> Any:
        derive = _DERIVED.get(canonical_name(key, self._prefix)) if isinstance(key, str) else None
        return derive(self) if derive else self._raw(key)

    def __getitem__(self, key: Any) -> Any:
        return self._read(key)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Our own names (and the dunder probes of copy and pickle,
        # which may come before __init__ ran) must not load the configuration or recurse.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._read(name)
        except KeyError:
            raise AttributeError(f"'Settings' object has no attribute {name!r}") from None

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when no layer has it."""
        try:
            return self._read(key)
        except KeyError:
            return default

    def __contains__(self, key: Any) -> bool:
        """Whether any layer has ``key`` (under any of its names); this loads the source."""
        self.load()
        return any(name in self._layers for name in lookup_names(key, self._prefix))

    def value_set_for(self, key: Any) -> bool:
        """Whether ``key`` was set by the changes or the source, not just defaulted (this loads)."""
        self.load()
        return any(name in layer for layer in self._layers.maps[:2]
                   for name in lookup_names(key, self._prefix))

    def _keys(self, with_defaults: bool = True) -> list[Any]:
        self.load()
        layers = self._layers.maps[::-1] if with_defaults else self._layers.maps[1::-1]
        first_names: dict[Any, Any] = {}  # canonical name → first name seen, in Celery's order
        for layer in layers:
            for key in layer:
                first_names.setdefault(canonical_name(key, self._prefix), key)
        return list(first_names.values())

    def keys(self) -> list[Any]:
        """Every key: the defaults' first, then the source's, then the changes', each setting once."""
        return self._keys()

    def values(self) -> list[Any]:
        """The values of :meth:`keys`, in the same order."""
        return [value for _, value in self.items()]

    def items(self) -> list[tuple[Any, Any]]:
        """``(key, value)`` pairs in the order of :meth:`keys`."""
        return [(key, self._read(key)) for key in self._keys()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    # -- writes ---------------------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name == "on_load":
            super().__setattr__(name, value)
        else:
            self[name] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._changes[key] = value

    def update(self, mapping: Any = None, /, **kwargs: Any) -> None:
        """Set several settings, like ``dict.update``; they go to the run-time changes."""
        if mapping is not None:
            self._changes.update(mapping)
        self._changes.update(kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Set ``key`` unless the run-time changes already have it; return the value there.

        Like Celery's pending configuration, this looks at the changes only, so it never loads the source.
        """
        for name in lookup_names(key, self._prefix):
            if name in self._changes:
                return self._changes[name]
        self[key] = default
        return default

    # -- printing -------------------------------------------------------------------------------------

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[Any, Any]:
        """The settings as a dict: only those set by the changes or the source, unless ``with_defaults``.

        Keys starting with ``_`` and names of dict methods are left out; ``censored`` masks secrets
        (see :func:`censor`).
        """
        from .censoring import censor

        table = {key: self._read(key) for key in self._keys(with_defaults)
                 if not (isinstance(key, str) and (key.startswith("_") or key in _DICT_MEMBERS))}
        return censor(table) if censored else table

    def humanize(self, with_defaults: bool = False, censored: bool = True) -> str:
        """The table as text, one ``key: value`` per line, in Celery's format."""
        from .censoring import pretty

        return "\n".join(f"{key}: {pretty(value)}"
                         for key, value in self.table(with_defaults, censored).items())

    def __repr__(self) -> str:
        # Does not load (a repr in a debugger must not import the configuration module), and names the
        # source without showing its values, which may hold secrets.
        source = self._pending[0] if self._pending else getattr(self._source, "obj", self._source)
        if not isinstance(source, str):
            source = getattr(source, "__name__", type(source).__name__) if source else None
        state = "loaded" if self._loaded else "not loaded"
        return f"<Settings {state}, source={source!r}, changed={list(self._changes)}>"

Mapping.register(Settings)  # so isinstance(conf, Mapping) holds, as for Celery's ChainMap-based conf
