"""Censoring settings for display: what ``humanize()`` and ``table()`` may show, and how it is printed.

Celery's rules, in order: a mapping is censored recursively; a key matching :data:`HIDDEN_SETTINGS`
shows ``'********'``; broker URLs are printed the kombu way with the password masked. minicelery adds
one rule Celery lacks: every other URL string has its password masked too. Celery's counterparts are
``filter_hidden_settings`` in ``celery.app.utils`` and ``celery.utils.text.pretty``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pprint import pformat
from typing import Any

from .urls import DEFAULT_MASK, mask_broker_url, sanitize_url

__all__ = ["HIDDEN_SETTINGS", "censor", "pretty"]

HIDDEN_SETTINGS = re.compile(
    "API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE|BEAT_DBURI", re.IGNORECASE)

_BROKER_URL_KEYS = frozenset({"broker_url", "broker_read_url", "broker_write_url"})


def censor(mapping: Mapping[Any, Any], mask: str = DEFAULT_MASK) -> dict[Any, Any]:
    """Return a copy of ``mapping`` that is safe to print, following Celery's rules in order.

    A mapping value is censored recursively (its key is not checked); a key matching
    :data:`HIDDEN_SETTINGS` gets ``mask``, even for ``None``; broker URLs are printed the kombu way with the
    password masked; any other URL string has its password masked. Lists and tuples are not searched.
    Censoring a censored mapping changes nothing.
    """
    return {key: _censor_value(key, value, mask) for key, value in mapping.items()}


def _censor_value(key: Any, value: Any, mask: str) -> Any:
    if isinstance(value, Mapping):
        return censor(value, mask)
    if isinstance(key, str):
        if HIDDEN_SETTINGS.search(key):
            return mask
        if key.lower() in _BROKER_URL_KEYS:
            return _censor_broker_url(value, mask)
    # Celery sanitizes the values of keys containing 'backend' only; minicelery masks the password of
    # every URL (a ``redis_url`` too). sanitize_url leaves a URL without a password unchanged.
    return sanitize_url(value, mask)


def _censor_broker_url(value: Any, mask: str) -> Any:
    if value == mask:
        return mask  # already censored; keeps censoring idempotent
    if value is None or isinstance(value, str):
        return mask_broker_url(value, mask)
    if isinstance(value, (list, tuple)):  # a failover list: kombu prints its first URL, we mask them all
        return type(value)(_censor_broker_url(item, mask) for item in value)
    return value


def pretty(value: Any) -> str:
    """Celery's ``celery.utils.text.pretty`` as ``humanize()`` uses it."""
    if isinstance(value, dict):
        return "\n " + pformat(value, indent=4, width=80)[1:]
    if isinstance(value, tuple):
        return "\n    " + pformat(value, width=80)
    return pformat(value, width=50)
