"""Beat: the process that sends periodic tasks when they are due.

It reads ``beat_schedule`` (plus ``add_periodic_task`` entries), merges it with the schedule file (which
remembers each entry's last run), then loops: send each due entry exactly as ``apply_async`` would (a
task this app does not know goes by name through ``send_task``), with the header ``celery_beat_task:
true``; stamp the entry with the send time; write the file; sleep until the next entry is due, at most
``beat_max_loop_interval`` (300 s). Nothing runs at start-up on a fresh schedule, an entry missed while
beat was down runs once, and a change of ``timezone`` or ``enable_utc`` starts every entry afresh. One
bad entry is logged and left out; it never stops beat. Celery's counterpart is ``celery.beat``
(``ScheduleEntry``, ``Scheduler``, ``PersistentScheduler``, ``Service``); left out are pluggable
schedulers, ``solar``, the ``celery.backend_cleanup`` entry and beat's remote control.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from .beat_store import ScheduleFile, StoredEntry, StoredState
from .exceptions import OperationalError, ScheduleFileError, SchedulingError
from .imports import import_object
from .schedules import humanize_seconds, maybe_schedule
from .urls import mask_broker_url

__all__ = ["ScheduleEntry", "Scheduler", "Service", "DEFAULT_MAX_INTERVAL"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_INTERVAL = 300.0  #: seconds; what ``beat_max_loop_interval = 0`` means, as in Celery
_ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})


class ScheduleEntry:
    """One periodic task: what to send, on which schedule, when it was last sent and how many times."""

    def __init__(self, name: str, task: str, schedule: Any, args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 last_run_at: datetime | None = None, total_run_count: int = 0) -> None:
        self.name, self.task, self.schedule = name, task, schedule
        self.args, self.kwargs, self.options = tuple(args), dict(kwargs or {}), dict(options or {})
        self.last_run_at = last_run_at or self.default_now()
        self.total_run_count = total_run_count

    @classmethod
    def from_setting(cls, name: str, spec: Any, app: Any, nowfun: Callable[[], datetime] | None = None
                     ) -> ScheduleEntry:
        """Build the entry ``name`` of ``beat_schedule``; ``nowfun`` becomes the clock of a schedule that
        has none.

        Raises:
            SchedulingError: the entry is not a dict with a task name and a valid schedule (the message
                names the entry).
        """
        try:
            if not isinstance(spec, Mapping):
                raise TypeError(f"it must be a dict with 'task' and 'schedule', not {spec!r}")
            unknown = set(spec) - _ENTRY_KEYS
            if unknown:
                raise TypeError(f"unknown key(s) {sorted(unknown)}; an entry has {sorted(_ENTRY_KEYS)}")
            if not isinstance(spec.get("task"), str) or not spec["task"]:
                raise TypeError(f"'task' must be a task name, not {spec.get('task')!r}")
            schedule = maybe_schedule(spec.get("schedule"), spec.get("relative", False), app=app)
            if schedule is None:
                raise TypeError("it has no 'schedule'")
            if nowfun is not None and schedule.nowfun is None:
                schedule.nowfun = nowfun
            args, kwargs = spec.get("args") or (), spec.get("kwargs") or {}
            options = spec.get("options") or {}
            if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
                raise TypeError(f"'args' must be a list or tuple, not {args!r}")
            if not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
                raise TypeError("'kwargs' and 'options' must be dicts")
            return cls(name, spec["task"], schedule, args, kwargs, options)
        except (TypeError, ValueError) as exc:
            raise SchedulingError(f"beat_schedule entry {name!r} is invalid: {exc}") from exc

    def default_now(self) -> datetime:
        """The schedule's clock: ``nowfun`` when it has one, else the app's."""
        return self.schedule.now()

    def is_due(self) -> tuple[bool, float]:
        """``(due, seconds until the next check)``, from the schedule."""
        return self.schedule.is_due(self.last_run_at)

    def mark_sent(self, when: datetime) -> None:
        """Record a send at ``when``: the next run is counted from the send, as in Celery."""
        self.last_run_at = when
        self.total_run_count += 1

    def __repr__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"<ScheduleEntry: {self.name} {self.task}({', '.join(shown)}) {self.schedule!r}>"


class Scheduler:
    """The entries and the decision of what to send when; a tick sends at most one entry.

    Args:
        app: the app whose ``beat_schedule`` and sending path are used.
        store: the schedule file (None: nothing is remembered between runs).
        max_interval: the longest sleep, in seconds (default ``beat_max_loop_interval`` or 300).
        nowfun: a clock for every schedule that has none (tests pass a fake one).
    """

    def __init__(self, app: Any, store: ScheduleFile | None = None, max_interval: float | None = None,
                 nowfun: Callable[[], datetime] | None = None) -> None:
        self.app = app
        self.store = store
        self.max_interval = float(max_interval or app.conf.beat_max_loop_interval or DEFAULT_MAX_INTERVAL)
        self.nowfun = nowfun
        self.entries: dict[str, ScheduleEntry] = {}

    def setup_schedule(self) -> None:
        """Build the entries from the settings, keep what the file remembers of them, write the file.

        Raises:
            ScheduleFileError: the file is corrupt, foreign or cannot be written.
        """
        conf = self.app.conf
        remembered = self._remembered(self.store.read() if self.store else None)
        self.entries = {}
        for name, spec in dict(conf.beat_schedule or {}).items():
            try:
                entry = ScheduleEntry.from_setting(name, spec, self.app, self.nowfun)
            except SchedulingError as exc:
                logger.error("%s. The entry is left out; beat goes on with the others.", exc)
                continue
            if name in remembered:
                entry.last_run_at, entry.total_run_count = remembered[name]
            if entry.task not in self.app.tasks:
                logger.warning("beat_schedule entry %r: task %r is not registered in this app, so it is sent "
                               "by name (as Celery does). If the name is right, a worker that knows it will "
                               "run it; otherwise fix the entry.", name, entry.task)
            self.entries[name] = entry
        self.sync(raise_errors=True)
        logger.debug("Current schedule:\n%s", "\n".join(repr(entry) for entry in self.entries.values()))

    def _remembered(self, state: StoredState | None) -> dict[str, StoredEntry]:
        conf = self.app.conf
        if state is None:
            return {}
        if state.tz != conf.timezone:
            logger.warning("Reset: Timezone changed from %r to %r", state.tz, conf.timezone)
            return {}
        if state.utc_enabled != bool(conf.enable_utc):
            choices = {True: "enabled", False: "disabled"}
            logger.warning("Reset: UTC changed from %s to %s", choices[state.utc_enabled],
                           choices[bool(conf.enable_utc)])
            return {}
        return state.entries

    def tick(self) -> float:
        """Send the first due entry, if any, and return the seconds to sleep (0: tick again at once)."""
        soonest = self.max_interval
        for entry in list(self.entries.values()):
            try:
                due, next_check = entry.is_due()
            except Exception as exc:  # noqa: BLE001 - a broken schedule must not stop the others
                logger.error("beat_schedule entry %r cannot be evaluated and is left out: %r",
                             entry.name, exc, exc_info=True)
                del self.entries[entry.name]
                continue
            if due:
                self.apply_entry(entry)
                return 0.0
            soonest = min(soonest, next_check - 0.010 if next_check > 0 else next_check)
        return max(soonest, 0.0)

    def apply_entry(self, entry: ScheduleEntry) -> None:
        """Send ``entry`` now and stamp it; a failed send is logged and waits for the next run."""
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        # Stamped before sending, as in Celery: a send that fails is not retried in a tight loop.
        entry.mark_sent(entry.default_now())
        try:
            result = self.send(entry)
        except Exception as exc:  # noqa: BLE001 - one entry's failure must not stop beat
            # An unreachable broker is said in one line; anything else comes with its traceback.
            logger.error("Message Error: Couldn't apply scheduled task %s: %s", entry.name, exc,
                         exc_info=not isinstance(exc, OperationalError))
        else:
            logger.debug("%s sent. id->%s", entry.task, getattr(result, "id", None))
        self.sync()

    def send(self, entry: ScheduleEntry) -> Any:
        """Send one entry exactly as ``apply_async`` would, plus the header ``celery_beat_task: true``.

        The arguments go as a list, as Celery's beat sends them (``argsrepr`` ``[1, 2]``).
        """
        options = dict(entry.options)
        options["headers"] = {**(options.get("headers") or {}), "celery_beat_task": True}
        task = self.app.tasks.get(entry.task)
        if task is not None:
            return task.apply_async(list(entry.args), dict(entry.kwargs), **options)
        return self.app.send_task(entry.task, list(entry.args), dict(entry.kwargs), **options)

    def sync(self, raise_errors: bool = False) -> None:
        """Write every entry's last run to the schedule file (a failure is logged unless ``raise_errors``)."""
        if self.store is None:
            return
        conf, zone = self.app.conf, self.app.timezone
        state = StoredState(conf.timezone, bool(conf.enable_utc), {
            name: StoredEntry(entry.last_run_at.astimezone(zone), entry.total_run_count)
            for name, entry in self.entries.items()})
        try:
            self.store.write(state)
        except ScheduleFileError as exc:
            if raise_errors:
                raise
            logger.error("%s; the last runs are kept in memory and written at the next send.", exc)

    def close(self) -> None:
        """Write the file one last time."""
        self.sync()


class Service:
    """Runs a :class:`Scheduler` until :meth:`stop` (or SIGTERM/SIGINT, once signals are installed).

    Args:
        app: the app.
        max_interval: the longest sleep (default ``beat_max_loop_interval``, else 300 s).
        schedule_filename: the schedule file (default ``beat_schedule_filename``).
    """

    def __init__(self, app: Any, max_interval: float | None = None, schedule_filename: str | None = None
                 ) -> None:
        self.app = app
        self.schedule_filename = schedule_filename or app.conf.beat_schedule_filename
        self.scheduler = Scheduler(app, ScheduleFile(self.schedule_filename), max_interval)
        self._stopping = threading.Event()

    def start(self) -> None:
        """Set the schedule up, then tick until stopped; the file is written at the end."""
        logger.info("beat: Starting...")
        scheduler, conf = self.scheduler, self.app.conf
        for module in tuple(conf.imports or ()) + tuple(conf.include or ()):
            import_object(module)  # as the worker does: the tasks beat sends are then known by name
        self.app.finalize()  # every task registered, on_after_finalize receivers run
        scheduler.setup_schedule()
        logger.debug("beat: Ticking with max interval->%s", humanize_seconds(scheduler.max_interval))
        try:
            while not self._stopping.is_set():
                interval = scheduler.tick()
                if interval > 0:
                    logger.debug("beat: Waking up in %s.", humanize_seconds(interval))
                    self._stopping.wait(interval)
        finally:
            logger.info("beat: Shutting down...")
            scheduler.close()

    def stop(self) -> None:
        """Ask the loop to end after the current tick (safe from a signal handler or another thread)."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop; beat then writes its file and exits with code 0."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def stop_at_end_of(self, descriptor: int) -> None:
        """Stop when the pipe ``descriptor`` ends: an embedded beat reads its parent's pipe, which ends
        when the worker exits, even if it was killed and could not stop beat itself."""
        def watch() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock,
            # and the interpreter then aborts at exit ("could not acquire lock for <stdin>").
            while os.read(descriptor, 4096):
                pass
            self.stop()

        threading.Thread(target=watch, name="beat-parent-watch", daemon=True).start()

    def banner(self, loglevel: str, version: str) -> str:
        """The start-up banner, in the shape of Celery's."""
        interval = self.scheduler.max_interval
        return "\n".join([
            f"minicelery beat v{version} is starting.",
            f"LocalTime -> {datetime.now():%Y-%m-%d %H:%M:%S}",
            "Configuration ->",
            f"    . broker -> {mask_broker_url(self.app.conf.broker_url, '**')}",
            "    . scheduler -> minicelery.beat.Scheduler",
            f"    . db -> {self.schedule_filename}",
            f"    . logfile -> [stderr]@%{loglevel.upper()}",
            f"    . maxinterval -> {humanize_seconds(interval)} ({interval:g}s)",
        ])
