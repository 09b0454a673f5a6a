"""Sending a canvas: how a signature, chain, group or chord becomes task messages (or eager runs).

Both a client (``chain(...).apply_async()``) and a worker (the next chain step, a callback, a chord found
in a message's embed) send through :func:`send`, so both publish exactly what Celery publishes (see
``docs/canvas.md``): a chain sends its first task with the other steps, frozen and reversed, in the
embed's ``chain``; a group sends one message per member with ``group``/``group_index``; a chord sends
``celery.chord_unlock`` and then its header, each header task carrying the body in ``embed.chord``.
:func:`apply` runs the same canvases in this process (``task_always_eager``, ``.apply()``).
Celery's counterparts are the ``apply_async``/``run``/``apply`` methods of ``celery.canvas``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from .canvas import Signature, _chain, group
from .chords import _chord
from .message import new_task_id
from .resultset import GroupResult

__all__ = ["E_CHORD_NO_BACKEND", "apply", "freeze", "send"]

#: Celery's text when a chord is applied on a backend that cannot join results (``{0}``: its scheme).
E_CHORD_NO_BACKEND = (
    'The "{0}" result backend does not support chords!\n\n'
    "Note that a group chained with a task is also upgraded to be a chord,\n"
    "as this pattern requires synchronization.\n\n"
    "Result backends that supports chords: Redis, Database, Memcached, and more."
)


def send(sig: Signature, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None,
         options: dict[str, Any]) -> Any:
    """Send ``sig`` with extra ``args`` (prepended), ``kwargs`` and ``options``; return its result."""
    if sig.app.conf.task_always_eager:
        return apply(sig, args, kwargs, options)
    if isinstance(sig, _chain):
        return _send_chain(sig, args, kwargs, options)
    if isinstance(sig, group):
        return _send_group(sig, args, kwargs, options)
    if isinstance(sig, _chord):
        return _send_chord(sig, args, kwargs, options)
    return _send_one(sig, args, kwargs, options)


def _send_one(sig: Signature, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    args, kwargs, options = sig._merge(args, kwargs, options)
    app = sig.app
    task = app.tasks.get(sig.task)
    if task is not None:
        return task.apply_async(args, kwargs, **options)
    return app.send_task(sig.task, args, kwargs, **options)  # by name: the task lives elsewhere


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def freeze(sig: Signature, *, group_id: str | None = None, group_index: int | None = None,
           task_id: str | None = None) -> Any:
    """Give ``sig`` (of any kind) its ids now and return its future result, as Celery's ``freeze``.

    A chain freezes every step and returns the last one's result, parents linked; a group freezes its
    members (``group_index`` each) under one id; a chord freezes its header under the group id and its
    body. ``group_id``/``group_index`` go to a chain's last step, where the group's result is read.
    """
    if isinstance(sig, _chain):
        results = [freeze(step) for step in sig.tasks[:-1]]
        results.append(freeze(sig.tasks[-1], group_id=group_id, group_index=group_index, task_id=task_id))
        for parent, child in zip(results, results[1:], strict=False):
            child.parent = parent
        return results[-1]
    if isinstance(sig, group):
        gid = sig.options.get("task_id") or task_id or new_task_id()
        sig.options.update({"task_id": gid, "root_id": sig.options.get("root_id"),
                            "parent_id": sig.options.get("parent_id")})
        members = [freeze(m, group_index=i) for i, m in enumerate(sig.tasks)]
        return GroupResult(gid, members, app=sig.app)
    if isinstance(sig, _chord):
        header = _header(sig)
        header_result = freeze(header, task_id=sig.options.get("task_id"))
        sig.options["task_id"] = header_result.id
        body_result = freeze(sig.body, task_id=task_id)
        body_result.parent = header_result
        return body_result
    result = sig.freeze(task_id, group_id=group_id, group_index=group_index)
    return result


def _header(sig: _chord) -> group:
    header = sig["kwargs"]["header"]
    if not isinstance(header, group):
        header = sig["kwargs"]["header"] = group(*header, app=sig._app)
    return header


# -- chain --------------------------------------------------------------------------------------------

def _send_chain(ch: _chain, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    steps = [step.clone() for step in ch.tasks]
    if not steps:
        return None
    options = {**ch.options, **options}
    last_id, link, link_error = options.pop("task_id", None), options.pop("link", None), \
        options.pop("link_error", None)
    first, rest = steps[0], steps[1:]
    if not rest and not isinstance(first, Signature.TYPES["chain"]) and first.subtask_type:
        return send(first, args, kwargs, {**options, "task_id": last_id} if last_id else options)
    refuse_chords(ch.app, steps)
    results = [freeze(step) for step in rest[:-1]]
    if rest:
        results.append(freeze(rest[-1], task_id=last_id))
    for callback in _listed(link):
        (rest or steps)[-1].link(callback)
    for errback in _listed(link_error):
        for step in steps:
            step.link_error(errback)
    first_options = {**options, "chain": [dict(step) for step in reversed(rest)]}
    if not rest and last_id:
        first_options["task_id"] = last_id
    first_result = send(first, args, kwargs, first_options)
    for parent, child in zip([first_result, *results], results, strict=False):
        _root(child).parent = parent
    return results[-1] if results else first_result


def _root(result: Any) -> Any:
    """The first result of a frozen sub-chain (where a parent is attached)."""
    while getattr(result, "parent", None) is not None:
        result = result.parent
    return result


def refuse_chords(app: Any, steps: Iterable[Signature]) -> None:
    """Raise Celery's ``NotImplementedError`` before anything is sent if a chord needs a backend that
    cannot join results (rpc://)."""
    if any(isinstance(step, _chord) for step in steps) and not getattr(app.backend, "supports_chords", False):
        scheme = str(getattr(app.backend, "url", "") or "disabled").split(":", 1)[0]
        raise NotImplementedError(E_CHORD_NO_BACKEND.format(scheme))


# -- group --------------------------------------------------------------------------------------------

def _send_group(g: group, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    options = {**g.options, **options}
    gid = options.pop("task_id", None) or new_task_id()
    for key in ("root_id", "parent_id"):
        if options.get(key) is None:
            options.pop(key, None)
    for callback in _listed(options.pop("link", None)):
        g.link(callback)
    for errback in _listed(options.pop("link_error", None)):
        g.link_error(errback)
    results = []
    for index, member in enumerate(_members(g)):
        member = member.clone()
        position = member.options.get("group_index", index)
        if isinstance(member, (_chain, group, _chord)):
            freeze(member, group_id=gid, group_index=position)
            results.append(send(member, args, kwargs, dict(options)))
        else:
            member.options.pop("group_index", None)
            results.append(send(member, args, kwargs, {**options, "group_id": gid, "group_index": position}))
    return GroupResult(gid, results, app=g.app)


def _members(g: group) -> list[Signature]:
    """The members, a nested group's inlined (its own indexes restart, as in Celery)."""
    found: list[Signature] = []
    for member in g.tasks:
        if isinstance(member, group) and not member.options:
            found.extend(m.clone().set(group_index=i) for i, m in enumerate(member.tasks))
        else:
            found.append(member)
    return found


# -- chord --------------------------------------------------------------------------------------------

def _send_chord(c: _chord, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    app = c.app
    refuse_chords(app, [c])
    c = cast(_chord, c.clone())
    options = {**c.options, **options}
    options.pop("chain", None)  # steps after a chord are folded into its body (canvas.flatten_chain)
    body_id = options.pop("task_id", None)
    header, body = _header(c), c.body
    gid = header.options.get("task_id") or new_task_id()
    for callback in _listed(options.pop("link", None)):
        body.link(callback)
    for errback in _listed(options.pop("link_error", None)):
        body.link_error(errback)
    ids = {key: options[key] for key in ("root_id", "parent_id") if options.get(key)}
    body_result = freeze(body, task_id=body_id or body.options.get("task_id"))
    if not header.tasks:
        send(body, ([],), {}, {**ids, "group_id": new_task_id()})
        body_result.parent = GroupResult(gid, [], app=app)
        return body_result
    if not isinstance(body, (_chain, group, _chord)):
        body.options["group_id"] = gid
    header_result = freeze(header, task_id=gid)
    app.send_task("celery.chord_unlock", (gid, body), {
        "interval": None, "max_retries": None, "result": [r.as_tuple() for r in header_result.results],
        "_chord_unlock_exchange_type": "direct"}, countdown=1, queue=body.options.get("queue"),
        ignore_result=True, reply_to=body.options.get("reply_to"), **ids)
    _send_group(header, args, kwargs, {**options, "task_id": gid, "chord": body})
    _root(body_result).parent = header_result
    return body_result


# -- eager ----------------------------------------------------------------------------------------------

def apply(sig: Signature, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
    """Run ``sig`` here and now; return an ``EagerResult`` (a ``GroupResult`` of them for a group).

    A failing chain step raises at once, as in Celery (each step's ``get()`` is called).
    """
    options = dict(options)
    for key in ("chain", "chord", "group_id", "group_index", "reply_to", "root_id", "parent_id"):
        options.pop(key, None)
    if isinstance(sig, _chain):
        result = None
        for index, step in enumerate(sig.tasks):
            step_args = args if result is None else (result.get(),)
            step_result = apply(step, step_args, kwargs if index == 0 else None, {})
            _root(step_result).parent = result
            result = step_result
        return result
    if isinstance(sig, group):
        results = [apply(member, args, kwargs, {}) for member in _members(sig)]
        return GroupResult(options.get("task_id") or new_task_id(), results, app=sig.app)
    if isinstance(sig, _chord):
        header = apply(_header(sig), args, kwargs, {})
        body = apply(sig.body, (header.get(),), {}, {})
        _root(body).parent = header
        return body
    args, kwargs, merged = sig._merge(args, kwargs, {**options})
    merged.pop("task_id", None)
    return sig.type.apply(args, kwargs, **merged)


