"""Turning a user's string into an object: ``config_from_object('proj.celeryconfig')`` and ``-A proj``.

This is the only place where minicelery resolves a string to an object; the library itself never loads
classes by dotted name. Celery's counterparts are ``celery.utils.imports.symbol_by_name`` and
``celery.app.utils.find_app``; the fallbacks of ``find_app`` follow Celery's order.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .exceptions import ImproperlyConfigured

__all__ = ["import_object", "find_app", "config_module_from_envvar"]

# Celery's text (celery.app.base), for config_from_envvar() with an unset variable.
_ENVVAR_NOT_SET = """\
The environment variable {0!r} is not set,
and as such the configuration could not be loaded.

Please set this variable and make sure it points to
a valid configuration module.

Example:
    {0}="proj.celeryconfig"
"""


def config_module_from_envvar(variable_name: str) -> str:
    """The configuration module named by the environment variable ``variable_name``.

    Raises:
        ImproperlyConfigured: the variable is not set (Celery's message, with an example).
    """
    module_name = os.environ.get(variable_name)
    if not module_name:
        raise ImproperlyConfigured(_ENVVAR_NOT_SET.strip().format(variable_name))
    return module_name


def import_object(spec: str) -> Any:
    """Import ``'module'``, ``'module:attr'`` or ``'module.attr'`` and return the object.

    A dotted name is first tried as a module, then as a module plus attribute, like Celery.

    Raises:
        ModuleNotFoundError: the module or the attribute does not exist (an attribute error is reported
            as a ``ModuleNotFoundError`` too, as Celery does).
    """
    module_name, sep, attr = spec.partition(":")
    if sep:
        return _attribute(importlib.import_module(module_name), attr, spec)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        parent, dot, attr = spec.rpartition(".")
        if not dot or exc.name not in (spec, None):
            raise
        return _attribute(importlib.import_module(parent), attr, spec)


def _attribute(module: Any, path: str, spec: str) -> Any:
    obj = module
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModuleNotFoundError(f"module {module.__name__!r} has no attribute {part!r}", name=spec)
    return obj


def find_app(spec: str, app_type: type) -> Any:
    """Resolve an ``-A`` argument to an app instance of ``app_type``.

    ``proj:app`` names the attribute. Otherwise ``proj`` is imported and its ``app`` attribute, then its
    ``celery`` attribute, then ``proj.celery:app`` (a package with a ``celery`` module), then any instance
    of ``app_type`` among its attributes are tried, in Celery's order.

    Raises:
        ModuleNotFoundError: the module cannot be imported.
        LookupError: the module holds no app.
    """
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # like `celery -A`, find modules in the current directory
    if ":" in spec:
        obj = import_object(spec)
        if not isinstance(obj, app_type):
            raise LookupError(f"{spec!r} is {obj!r}, not a {app_type.__name__} application")
        return obj
    module = importlib.import_module(spec)
    for attr in ("app", "celery"):
        found = getattr(module, attr, None)
        if isinstance(found, app_type):
            return found
        if attr == "celery" and getattr(found, "__name__", "") == f"{spec}.celery":
            inner = getattr(found, "app", None)
            if isinstance(inner, app_type):
                return inner
    if hasattr(module, "__path__"):
        try:
            inner = importlib.import_module(f"{spec}.celery")
        except ModuleNotFoundError as exc:
            if exc.name != f"{spec}.celery":
                raise
        else:
            found = getattr(inner, "app", None)
            if isinstance(found, app_type):
                return found
    for value in vars(module).values():
        if isinstance(value, app_type):
            return value
    raise LookupError(f"Could not find a {app_type.__name__} application in module {spec!r}")
