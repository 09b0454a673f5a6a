"""Broker and backend URLs: parsing an AMQP URL, and printing URLs with their passwords masked.

All of minicelery's URL knowledge lives here. Celery's counterparts are kombu's ``Connection(url).as_uri()``
and ``kombu.utils.url`` (``parse_url``, ``maybe_sanitize_url``). What is left out: kombu's other transports,
failover lists (``'amqp://a;amqp://b'``) and query-string transport options, which are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import ImproperlyConfigured

__all__ = ["BrokerAddress", "DEFAULT_MASK", "mask_broker_url", "parse_broker_url", "sanitize_url",
           "transport_scheme"]

#: What replaces a password in printed configuration (eight asterisks, like Celery).
DEFAULT_MASK = "********"

#: AMQP schemes kombu understands, and the scheme each is printed as (kombu prints ``pyamqp`` as ``amqp``).
_AMQP_SCHEMES = {"amqp": "amqp", "pyamqp": "amqp", "librabbitmq": "amqp", "amqps": "amqps"}

# ``scheme://user:password@`` at the start of a URL. The authority ends at the first '/', '?' or '#'
# (RFC 3986), and the user information at the last '@' inside it, as urllib.parse reads it.
# The password match is greedy, so it runs to the last '@' of the authority.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/?#:]*:)(?P<password>[^/?#]*)@")


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in, with kombu's AMQP defaults filled in.

    Attributes:
        scheme: ``'amqp'`` or ``'amqps'`` (``pyamqp`` and ``librabbitmq`` read as ``amqp``).
        host: host name; ``'localhost'`` when the URL has none.
        port: 5672, or 5671 for ``amqps``, unless the URL gives one.
        userid: user name; ``'guest'`` when the URL has none.
        password: password; ``'guest'`` when the URL has none.
        virtual_host: the vhost, ``'/'`` by default (``amqp://h//`` and ``amqp://h/%2F`` both mean ``/``).
        ssl: True for ``amqps``.
    """

    scheme: str = "amqp"
    host: str = "localhost"
    port: int = 5672
    userid: str = "guest"
    password: str = "guest"
    virtual_host: str = "/"
    ssl: bool = False

    def as_uri(self, mask: str = DEFAULT_MASK) -> str:
        """Print the address as kombu does, with the password replaced by ``mask``.

        The vhost is URL-quoted after a ``/``, so the default vhost ``/`` prints as ``//``.
        """
        from urllib.parse import quote  # only printing and parsing URLs need it (import time)

        host = f"[{self.host}]" if ":" in self.host else quote(self.host, safe="")
        user = quote(self.userid, safe="")
        return f"{self.scheme}://{user}:{mask}@{host}:{self.port}/{quote(self.virtual_host)}"


def transport_scheme(url: str | None) -> str:
    """Which transport a broker URL needs: ``'memory'`` for ``memory://``, else ``'amqp'``.

    Raises:
        ImproperlyConfigured: the URL is neither (see :func:`parse_broker_url`).
    """
    if (url or "").lower().startswith("memory://"):
        return "memory"
    parse_broker_url(url)
    return "amqp"


def parse_broker_url(url: str | None) -> BrokerAddress:
    """Parse an AMQP broker URL; ``None`` or ``'amqp://'`` gives the local default broker.

    Raises:
        ImproperlyConfigured: the scheme is not AMQP, or the URL cannot be parsed (the password is masked
            in the message).
    """
    if not url:
        return BrokerAddress()
    scheme, sep, _ = url.partition("://")
    if not sep:
        url, scheme = f"amqp://{url}", "amqp"  # a bare 'host' or 'user:pw@host', as kombu reads it
    if scheme.lower() not in _AMQP_SCHEMES:
        raise ImproperlyConfigured(
            f"Unsupported broker URL {_mask_password(url, DEFAULT_MASK)!r}: minicelery speaks AMQP; set "
            f"broker_url to an amqp://, amqps://, pyamqp:// or librabbitmq:// URL (or memory:// for a broker "
            f"inside this process).")
    try:
        return _address(url, _AMQP_SCHEMES[scheme.lower()])
    except ValueError as exc:
        raise ImproperlyConfigured(f"Cannot parse broker URL {_mask_password(url, DEFAULT_MASK)!r}: {exc}")


def _address(url: str, scheme: str) -> BrokerAddress:
    from urllib.parse import unquote, urlsplit  # only printing and parsing URLs need it (import time)

    parts = urlsplit(url)
    ssl = scheme == "amqps"
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return BrokerAddress(
        scheme=scheme,
        host=unquote(parts.hostname or "") or "localhost",
        port=parts.port or (5671 if ssl else 5672),  # .port raises ValueError for a bad port
        userid=unquote(parts.username or "") or "guest",
        password=unquote(parts.password or "") or "guest",
        virtual_host=unquote(path) or "/",
        ssl=ssl,
    )


def mask_broker_url(url: str | None, mask: str = DEFAULT_MASK) -> str:
    """Print a broker URL the way kombu's ``Connection(url).as_uri(mask=mask)`` does.

    AMQP URLs are normalised: default user ``guest``, port 5672 (5671 for amqps), vhost quoted, and the
    mask always present, e.g. ``amqp://u:p@h//`` → ``amqp://u:********@h:5672//``. Other schemes only get
    their password masked; a URL that cannot be parsed is replaced by the mask as a whole.
    """
    try:
        return parse_broker_url(url).as_uri(mask)
    except ImproperlyConfigured:
        scheme = (url or "").partition("://")[0].lower()
        if scheme in _AMQP_SCHEMES or "://" not in (url or ""):
            return mask  # an AMQP URL we cannot parse: where the password ends is unknown, hide it all
        return _mask_password(url or "", mask)


def sanitize_url(value: object, mask: str = DEFAULT_MASK) -> object:
    """Replace the password of a ``scheme://user:password@host`` URL by ``mask``; change nothing else.

    Used for settings whose name contains ``backend``: ``redis://:pw@localhost:6379/0`` becomes
    ``redis://:********@localhost:6379/0``. Values that are not strings are returned unchanged.
    """
    if not isinstance(value, str):
        return value
    return _mask_password(value, mask)


def _mask_password(url: str, mask: str) -> str:
    match = _USERINFO.match(url)
    if match is None:
        return url
    return f"{match.group('head')}{mask}{url[match.end('password'):]}"
