"""The names of a task's states, and the sets that say what each state means.

Celery's counterpart is ``celery.states``. The names are the strings that travel in the ``status`` field
of a result message, so they are exactly Celery's. Left out: the ``state`` string subclass that compares
states by precedence, and ``precedence()``; the rpc backend keeps only the latest state, so nothing here
needs to order them.
"""

from __future__ import annotations

__all__ = [
    "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", "RETRY", "IGNORED",
    "READY_STATES", "UNREADY_STATES", "EXCEPTION_STATES", "PROPAGATE_STATES", "ALL_STATES",
]

#: Unknown id, or not run yet: every id starts here, and an id nobody sent reports it too.
PENDING = "PENDING"
#: The worker received the message (sent only with events, which minicelery leaves out).
RECEIVED = "RECEIVED"
#: A worker started running the task (sent only when ``task_track_started`` is on).
STARTED = "STARTED"
#: The task returned; the result is its return value.
SUCCESS = "SUCCESS"
#: The task raised; the result is the exception.
FAILURE = "FAILURE"
#: The task was revoked or expired before it ran.
REVOKED = "REVOKED"
#: The task raised ``Reject``: its message was rejected.
REJECTED = "REJECTED"
#: The task asked to be retried; the result is the exception that caused it, if any.
RETRY = "RETRY"
#: The task raised ``Ignore``: no state is stored.
IGNORED = "IGNORED"

#: The states after which nothing more will happen: ``AsyncResult.get()`` stops waiting here.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: The states a task passes through on its way to a ready state.
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
#: The states whose result is an exception (serialized as ``exc_type``/``exc_message``/``exc_module``).
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
#: The states in which ``AsyncResult.get(propagate=True)`` raises the task's exception.
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
#: Celery's ``ALL_STATES`` (which, like Celery's, leaves out REJECTED and IGNORED).
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})
