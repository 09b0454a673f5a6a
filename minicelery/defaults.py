"""The settings table: every setting minicelery knows, with Celery's name, Celery's default and a doc line.

Celery's counterpart is ``celery.app.defaults``, whose ``NAMESPACES`` tree holds 207 options with types,
deprecation data and old (Celery 3) names. This module keeps one flat table, in Celery's order, of the
settings a user of a task queue sets (broker, results, tasks, routing, worker, logging), and derives the
old UPPERCASE names from Celery's naming rules. Left out: the settings of backends and security that
minicelery does not implement, option types and deprecation warnings. A setting
missing here can still be set and read through ``app.conf``; it just has no default.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple

__all__ = ["Setting", "SETTINGS", "DEFAULTS", "NEW_TO_OLD", "OLD_TO_NEW", "DEFAULT_BROKER_URL",
           "DEFAULT_PROCESS_LOG_FMT", "DEFAULT_TASK_LOG_FMT"]


class Setting(NamedTuple):
    """One setting: its default value and a one-line description."""

    default: Any
    doc: str


#: What a ``None`` broker_url means: kombu's defaults for the AMQP transport.
DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672//"

#: Celery's worker log format (``celery.app.defaults.DEFAULT_PROCESS_LOG_FMT``).
DEFAULT_PROCESS_LOG_FMT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"

#: Celery's log format inside tasks (``celery.app.defaults.DEFAULT_TASK_LOG_FMT``).
DEFAULT_TASK_LOG_FMT = "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"

_PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}

# Order follows Celery's NAMESPACES (top level, broker, result, task, worker), so that
# ``humanize(with_defaults=True)`` lists settings in the order Celery prints them.
SETTINGS: dict[str, Setting] = {
    # -- top level ------------------------------------------------------------------------------------
    "accept_content": Setting(("json",), "Content types (or serializer names) a worker accepts."),
    "result_accept_content": Setting(None, "Content types accepted for results; None means accept_content."),
    "enable_utc": Setting(True, "Dates in messages are UTC."),
    "imports": Setting((), "Modules the worker imports at start-up to register tasks."),
    "include": Setting((), "Like imports, imported after them."),
    "timezone": Setting(None, "Time zone name; None means UTC (or the local zone when enable_utc is off)."),
    # -- beat -----------------------------------------------------------------------------------------
    "beat_schedule": Setting({}, "Periodic tasks: name → {task, schedule, args, kwargs, options}."),
    "beat_schedule_filename": Setting("celerybeat-schedule", "File where beat keeps each entry's last run."),
    "beat_sync_every": Setting(0, "Sends between writes of the schedule file (minicelery: after each send)."),
    "beat_max_loop_interval": Setting(0, "Longest sleep of beat between checks; 0 means 300 seconds."),
    "beat_cron_starting_deadline": Setting(
        None, "Seconds after which a missed crontab run is skipped instead of run late; None: never."),
    # -- remote control and events --------------------------------------------------------------------
    "control_exchange": Setting("celery", "Name stem of the remote control exchanges: <name>.pidbox."),
    "control_queue_ttl": Setting(300.0, "Seconds a control message waits in a mailbox (x-message-ttl)."),
    "control_queue_expires": Setting(10.0, "Seconds an unused mailbox or reply queue lives (x-expires)."),
    "event_exchange": Setting("celeryev", "Topic exchange monitoring events are published to."),
    "event_queue_ttl": Setting(5.0, "Seconds an event waits in a monitor's queue (x-message-ttl)."),
    "event_queue_expires": Setting(60.0, "Seconds an unused monitor queue lives (x-expires)."),
    "event_serializer": Setting("json", "Serializer of monitoring events."),
    # -- broker ---------------------------------------------------------------------------------------
    "broker_url": Setting(None, f"AMQP URL of the broker; None means {DEFAULT_BROKER_URL}."),
    "broker_read_url": Setting(None, "Broker URL used for consuming; None means broker_url."),
    "broker_write_url": Setting(None, "Broker URL used for publishing; None means broker_url."),
    "broker_transport": Setting(None, "Transport name; minicelery speaks AMQP only."),
    "broker_transport_options": Setting({}, "Extra options passed to the transport."),
    "broker_connection_timeout": Setting(4, "Seconds to wait for the broker connection to open."),
    "broker_connection_retry": Setting(True, "Retry a lost broker connection."),
    "broker_connection_retry_on_startup": Setting(
        None, "Retry the worker's first connection when true; else an unreachable broker fails fast."),
    "broker_connection_max_retries": Setting(100, "Connection attempts before giving up; 0/None: forever."),
    "broker_channel_error_retry": Setting(False, "Retry when a channel error closes the connection."),
    "broker_heartbeat": Setting(120, "AMQP heartbeat in seconds; 0 disables it."),
    "broker_heartbeat_checkrate": Setting(3.0, "How many times per heartbeat interval it is checked."),
    "broker_login_method": Setting(None, "SASL login method; None means AMQPLAIN/PLAIN."),
    "broker_pool_limit": Setting(10, "Connections kept in the producer pool; None means no limit."),
    "broker_use_ssl": Setting(False, "Use TLS to the broker; a dict gives SSL options."),
    # -- results --------------------------------------------------------------------------------------
    "result_backend": Setting(None, "Where results are stored, e.g. 'rpc://'; None disables results."),
    "result_compression": Setting(None, "Compression of result messages (not implemented)."),
    "result_exchange": Setting("celeryresults", "Exchange of the amqp result backend (unused by rpc)."),
    "result_exchange_type": Setting("direct", "Type of result_exchange."),
    "result_expires": Setting(datetime.timedelta(days=1), "How long results are kept."),
    "result_persistent": Setting(None, "Send results persistently (delivery mode 2); None means False."),
    "result_extended": Setting(False, "Store the task name, arguments and worker with the result."),
    "result_serializer": Setting("json", "Serializer of results."),
    "result_backend_transport_options": Setting({}, "Extra options passed to the result backend."),
    # -- tasks ----------------------------------------------------------------------------------------
    "task_acks_late": Setting(False, "Acknowledge a task message after the task ran, not before."),
    "task_acks_on_failure_or_timeout": Setting(True, "With acks_late, ack failed or timed-out tasks too."),
    "task_always_eager": Setting(False, "apply_async() runs the task locally instead of sending it."),
    "task_annotations": Setting(None, "Task attribute overrides, by task name or '*'."),
    "task_compression": Setting(None, "Compression of task messages: gzip, bzip2 or lzma (kombu's names)."),
    "task_create_missing_queues": Setting(True, "Define queues named in routes that are not in task_queues."),
    "task_inherit_parent_priority": Setting(False, "Subtasks inherit their parent's priority."),
    "task_default_delivery_mode": Setting(2, "AMQP delivery mode of task messages: 2 persistent, 1 not."),
    "task_default_queue": Setting("celery", "Queue tasks go to when no route names one."),
    "task_default_exchange": Setting(None, "Exchange of the default queue; None means task_default_queue."),
    "task_default_exchange_type": Setting("direct", "Type of the default exchange."),
    "task_default_routing_key": Setting(
        None, "Routing key of the default queue; None means task_default_queue."),
    "task_default_rate_limit": Setting(None, "Rate limit of every task, e.g. '10/m'."),
    "task_default_priority": Setting(None, "Priority of task messages when none is given."),
    "task_eager_propagates": Setting(False, "Eagerly run tasks re-raise their exceptions."),
    "task_ignore_result": Setting(False, "Do not store task results."),
    "task_store_eager_result": Setting(False, "Store the results of eagerly run tasks."),
    "task_protocol": Setting(2, "Version of the task message protocol."),
    "task_publish_retry": Setting(True, "Retry publishing a task message when the connection is lost."),
    "task_publish_retry_policy": Setting(_PUBLISH_RETRY_POLICY, "How publishing is retried."),
    "task_queues": Setting(None, "The queues a worker consumes from; None means the default queue."),
    "task_queue_max_priority": Setting(None, "x-max-priority of the queues minicelery declares."),
    "task_reject_on_worker_lost": Setting(
        None, "With acks_late, requeue the message when the worker process dies."),
    "task_remote_tracebacks": Setting(False, "Show the worker's traceback in re-raised errors."),
    "task_routes": Setting(None, "Routing of tasks to queues, by task name or glob."),
    "task_send_sent_event": Setting(False, "Send a task-sent event for every published task."),
    "task_serializer": Setting("json", "Serializer of task messages."),
    "task_soft_time_limit": Setting(None, "Seconds after which SoftTimeLimitExceeded is raised in a task "
                                          "(None or 0: no limit)."),
    "task_time_limit": Setting(None, "Seconds after which the process running a task is killed "
                                     "(None or 0: no limit)."),
    "task_store_errors_even_if_ignored": Setting(False, "Store errors even when results are ignored."),
    "task_track_started": Setting(False, "Report the STARTED state when a worker begins a task."),
    # -- worker ---------------------------------------------------------------------------------------
    "worker_cancel_long_running_tasks_on_connection_loss": Setting(
        False, "Cancel running acks_late tasks when the broker connection is lost."),
    "worker_soft_shutdown_timeout": Setting(0.0, "Seconds a cold shutdown first waits for tasks."),
    "worker_enable_soft_shutdown_on_idle": Setting(False, "Soft shutdown also when no task is running."),
    "worker_concurrency": Setting(None, "Number of child processes; None means the CPU count."),
    "worker_disable_rate_limits": Setting(False, "Ignore task rate limits."),
    "worker_enable_remote_control": Setting(True, "Consume remote control commands (inspect, control)."),
    "worker_hijack_root_logger": Setting(True, "Replace the root logger's handlers at worker start."),
    "worker_log_color": Setting(None, "Colour the log; None means when logging to a terminal."),
    "worker_log_format": Setting(DEFAULT_PROCESS_LOG_FMT, "Log format of the worker."),
    "worker_lost_wait": Setting(10.0, "Seconds to wait for a dead child's result before WorkerLostError."),
    "worker_max_memory_per_child": Setting(None, "Resident KiB after which a child is replaced."),
    "worker_max_tasks_per_child": Setting(None, "Tasks after which a child process is replaced."),
    "worker_pool": Setting("prefork", "Execution pool."),
    "worker_proc_alive_timeout": Setting(4.0, "Seconds to wait for a new child to report ready."),
    "worker_prefetch_multiplier": Setting(4, "Prefetch count is concurrency times this."),
    "worker_redirect_stdouts": Setting(True, "Send print() output of tasks to the log."),
    "worker_redirect_stdouts_level": Setting("WARNING", "Level of the redirected output."),
    "worker_send_task_events": Setting(False, "Send task events for monitoring (as worker -E)."),
    "worker_task_log_format": Setting(DEFAULT_TASK_LOG_FMT, "Log format inside tasks."),
}

#: Name → default, what ``app.conf`` answers when nothing else sets a key.
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}

# Celery 3 spelled settings in UPPERCASE, grouped by prefix: task settings were ``CELERY_*``,
# worker settings ``CELERYD_*``. Celery 4 generates the old names from these per-namespace rules
# (``__old__`` in ``celery.app.defaults``); the settings whose old name broke the rule are listed.
_OLD_PREFIXES = {
    "task_": "CELERY_",
    "worker_": "CELERYD_",
    "result_": "CELERY_RESULT_",
    "beat_": "CELERYBEAT_",
    "event_": "CELERY_EVENT_",
}
_OLD_UNPREFIXED = {"accept_content", "imports", "include", "timezone"}  # became CELERY_<NAME>
_OLD_EXCEPTIONS = {
    "result_accept_content": "RESULT_ACCEPT_CONTENT",
    "result_expires": "CELERY_TASK_RESULT_EXPIRES",
    "task_compression": "CELERY_MESSAGE_COMPRESSION",
    "task_eager_propagates": "CELERY_EAGER_PROPAGATES_EXCEPTIONS",
    "task_protocol": "CELERY_TASK_PROTOCOL",
    "task_publish_retry": "CELERY_TASK_PUBLISH_RETRY",
    "task_publish_retry_policy": "CELERY_TASK_PUBLISH_RETRY_POLICY",
    "task_send_sent_event": "CELERY_SEND_TASK_SENT_EVENT",
    "task_serializer": "CELERY_TASK_SERIALIZER",
    "task_soft_time_limit": "CELERYD_TASK_SOFT_TIME_LIMIT",
    "task_time_limit": "CELERYD_TASK_TIME_LIMIT",
    "worker_disable_rate_limits": "CELERY_DISABLE_RATE_LIMITS",
    "worker_enable_remote_control": "CELERY_ENABLE_REMOTE_CONTROL",
    "worker_lost_wait": "CELERYD_WORKER_LOST_WAIT",
    "worker_redirect_stdouts": "CELERY_REDIRECT_STDOUTS",
    "worker_redirect_stdouts_level": "CELERY_REDIRECT_STDOUTS_LEVEL",
    "worker_send_task_events": "CELERY_SEND_EVENTS",
}


def _old_name(name: str) -> str:
    if name in _OLD_EXCEPTIONS:
        return _OLD_EXCEPTIONS[name]
    if name in _OLD_UNPREFIXED:
        return "CELERY_" + name.upper()
    for prefix, old_prefix in _OLD_PREFIXES.items():
        if name.startswith(prefix):
            return old_prefix + name[len(prefix):].upper()
    return name.upper()  # broker_url → BROKER_URL, enable_utc → ENABLE_UTC


#: New lowercase name → Celery 3 UPPERCASE name (``task_acks_late`` → ``CELERY_ACKS_LATE``).
NEW_TO_OLD: dict[str, str] = {name: _old_name(name) for name in SETTINGS}

#: Celery 3 UPPERCASE name → new lowercase name.
OLD_TO_NEW: dict[str, str] = {old: new for new, old in NEW_TO_OLD.items()}
