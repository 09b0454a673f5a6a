"""The settings table against Celery 5.7's observed defaults (spec §3, spec-detailed §6.4, §6.7)."""

import datetime
import pathlib

import pytest

from minicelery.defaults import DEFAULTS, NEW_TO_OLD, OLD_TO_NEW, SETTINGS, Setting

# Observed on a fresh Celery 5.7 app (spec-detailed §6.7 and spec §3).
CELERY_DEFAULTS = {
    "broker_url": None,
    "broker_read_url": None,
    "broker_write_url": None,
    "result_backend": None,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ("json",),
    "result_accept_content": None,
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 4,
    "worker_max_tasks_per_child": None,
    "worker_pool": "prefork",
    "task_default_queue": "celery",
    "task_default_exchange": None,
    "task_default_routing_key": None,
    "task_default_exchange_type": "direct",
    "task_default_delivery_mode": 2,
    "task_create_missing_queues": True,
    "timezone": None,
    "enable_utc": True,
    "task_acks_late": False,
    "task_acks_on_failure_or_timeout": True,
    "task_reject_on_worker_lost": None,
    "task_track_started": False,
    "task_ignore_result": False,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_protocol": 2,
    "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_max": 1,
                                  "interval_step": 0.2},
    "result_expires": datetime.timedelta(days=1),
    "result_persistent": None,
    "result_exchange": "celeryresults",
    "broker_heartbeat": 120,
    "broker_pool_limit": 10,
    "broker_connection_timeout": 4,
    "broker_connection_retry": True,
    "broker_connection_retry_on_startup": None,
    "broker_connection_max_retries": 100,
    "broker_transport_options": {},
    "task_default_priority": None,
    "task_routes": None,
    "task_queues": None,
    "task_annotations": None,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_task_log_format": (
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"),
    "include": (),
    "imports": (),
    "worker_lost_wait": 10.0,
}


@pytest.mark.parametrize(("name", "expected"), sorted(CELERY_DEFAULTS.items()))
def test_default_matches_celery(name, expected):
    assert DEFAULTS[name] == expected
    assert type(DEFAULTS[name]) is type(expected)  # tuples stay tuples: humanize prints them apart


def test_every_setting_has_a_one_line_doc():
    for name, setting in SETTINGS.items():
        assert isinstance(setting, Setting)
        assert setting.doc.strip() and "\n" not in setting.doc, name
        assert name == name.lower() and name.isidentifier(), name


def test_defaults_mirror_the_table_in_celerys_order():
    assert list(DEFAULTS) == list(SETTINGS)
    # The with-defaults humanize() of Celery starts with these, in this order (spec-detailed §7.5).
    assert list(DEFAULTS)[:6] == ["accept_content", "result_accept_content", "enable_utc", "imports",
                                  "include", "timezone"]


@pytest.mark.parametrize(("new", "old"), [
    # spec-detailed §6.4, observed.
    ("broker_url", "BROKER_URL"),
    ("task_serializer", "CELERY_TASK_SERIALIZER"),
    ("result_backend", "CELERY_RESULT_BACKEND"),
    ("worker_concurrency", "CELERYD_CONCURRENCY"),
    ("worker_prefetch_multiplier", "CELERYD_PREFETCH_MULTIPLIER"),
    ("task_default_queue", "CELERY_DEFAULT_QUEUE"),
    ("task_acks_late", "CELERY_ACKS_LATE"),
    ("task_always_eager", "CELERY_ALWAYS_EAGER"),
    ("task_eager_propagates", "CELERY_EAGER_PROPAGATES_EXCEPTIONS"),
    ("result_expires", "CELERY_TASK_RESULT_EXPIRES"),
    ("timezone", "CELERY_TIMEZONE"),
    ("enable_utc", "ENABLE_UTC"),
    ("accept_content", "CELERY_ACCEPT_CONTENT"),
    # Celery's explicit exceptions to the namespace rule (celery.app.defaults).
    ("worker_send_task_events", "CELERY_SEND_EVENTS"),
    ("task_time_limit", "CELERYD_TASK_TIME_LIMIT"),
    ("worker_lost_wait", "CELERYD_WORKER_LOST_WAIT"),
    ("result_accept_content", "RESULT_ACCEPT_CONTENT"),
])
def test_old_names(new, old):
    assert NEW_TO_OLD[new] == old
    assert OLD_TO_NEW[old] == new


def test_old_names_are_unique_and_uppercase():
    assert len(set(NEW_TO_OLD.values())) == len(NEW_TO_OLD) == len(SETTINGS)
    assert all(old == old.upper() for old in OLD_TO_NEW)
    assert {new: old for old, new in OLD_TO_NEW.items()} == NEW_TO_OLD


def test_every_setting_is_documented_in_docs_configuration():
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [name for name in SETTINGS if f"`{name}`" not in doc]
    assert not missing, f"add these settings to docs/configuration.md: {missing}"
