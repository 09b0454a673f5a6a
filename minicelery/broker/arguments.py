"""Declarations: validating queues' ``x-`` arguments and checking that a redeclaration is equivalent.

RabbitMQ answers a bad argument or an inequivalent redeclaration with ``406 PRECONDITION_FAILED`` and a text
that names the argument, the received and the current value; clients and their users read those texts, so
they are reproduced. Integer types are equivalent to each other (clients disagree on encodings: ``I``, ``l``,
``u``), a double is not; unknown keys are neither validated nor compared.
"""

from __future__ import annotations

from typing import Any

from .frames import PRECONDITION_FAILED, AMQPError

#: The arguments that must match on redeclaration (``x-queue-type`` absent means ``classic``).
COMPARED = ("x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
            "x-max-priority", "x-max-length", "x-max-length-bytes", "x-overflow", "x-queue-type")

#: argument -> (smallest allowed value, largest allowed value or None)
_INTEGERS = {"x-expires": (1, None), "x-message-ttl": (0, None), "x-max-priority": (0, 255),
             "x-max-length": (0, None), "x-max-length-bytes": (0, None)}
_STRINGS = ("x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow", "x-queue-type")


def type_name(value: Any) -> str:
    """RabbitMQ's name for a field value's type, as it appears in its error texts."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "longstr"
    return type(value).__name__


def show(value: Any) -> str:
    """A value as RabbitMQ prints it in an equivalence error (doubles in Erlang's ``6.0e4`` style)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return str(value)


def validate_queue(name: str, arguments: dict[str, Any]) -> None:
    """Raise 406 for a known argument with a wrong type or value (RabbitMQ's texts)."""
    def bad(key: str, detail: str) -> AMQPError:
        return AMQPError(PRECONDITION_FAILED,
                         f"invalid arg '{key}' for queue '{name}' in vhost '/': {detail}")

    for key, (low, high) in _INTEGERS.items():
        if key not in arguments:
            continue
        value = arguments[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(key, f"{{unacceptable_type,{type_name(value)}}}")
        if value < 0:
            raise bad(key, f"{{value_negative,{value}}}")
        if value < low:
            raise bad(key, f"{{value_zero,{value}}}")
        if high is not None and value > high:
            raise bad(key, f"{{max_value_exceeded,{value}}}")
    for key in _STRINGS:
        if key in arguments and not isinstance(arguments[key], str):
            raise bad(key, f"{{unacceptable_type,{type_name(arguments[key])}}}")
    overflow = arguments.get("x-overflow", "drop-head")
    if overflow not in ("drop-head", "reject-publish", "reject-publish-dlx"):
        raise bad("x-overflow", f"{{unknown_overflow_type,{overflow}}}")
    kind = arguments.get("x-queue-type", "classic")
    if kind != "classic":
        raise AMQPError(PRECONDITION_FAILED, f"invalid arg 'x-queue-type' for queue '{name}' in vhost '/': "
                                             f"\"unsupported queue type '{kind}'\"")


def check_equivalent(kind: str, name: str, current: dict[str, Any], received: dict[str, Any]) -> None:
    """Raise 406 when a redeclaration differs from the declaration in a compared flag or argument.

    ``current``/``received`` map flag names (``durable``, ``type``…) and compared arguments to values.
    """
    for key in current.keys() | received.keys():
        old, new = current.get(key), received.get(key)
        if _same(old, new):
            continue
        where = f"inequivalent arg '{key}' for {kind} '{name}' in vhost '/'"
        if new is None:
            detail = f"received none but current is the value '{show(old)}' of type '{type_name(old)}'"
        elif old is None:
            detail = f"received the value '{show(new)}' of type '{type_name(new)}' but current is none"
        else:
            detail = f"received '{show(new)}' but current is '{show(old)}'"
        raise AMQPError(PRECONDITION_FAILED, f"{where}: {detail}")


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) != isinstance(new, float) or isinstance(old, bool) != isinstance(new, bool):
        return False
    return bool(old == new)


def compared(flags: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The flags plus the compared arguments of a declaration (``x-queue-type`` defaulting to classic)."""
    found = {key: arguments[key] for key in COMPARED if key in arguments}
    found.setdefault("x-queue-type", "classic")
    return {**flags, **found}
