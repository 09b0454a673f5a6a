"""Configuration precedence against a plain-dict model: run-time changes > source > defaults, always."""

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minicelery.config import Settings, canonical_name, lookup_names
from minicelery.defaults import DEFAULTS, OLD_TO_NEW, SETTINGS

# A few real settings (with defaults) and a few free keys (without); no derived or old-style names,
# whose reads are tested by example in tests/unit/test_config.py.
KEYS = ["task_serializer", "worker_concurrency", "task_acks_late", "task_default_queue", "alpha", "beta"]
keys = st.sampled_from(KEYS)
values = st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["json", "msgpack", "q"]))
sources = st.dictionaries(keys, values, max_size=4)


class ConfigurationModel(RuleBasedStateMachine):
    """Random writes, sources and reads, each read checked against three plain dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.conf = Settings()
        self.changes: dict = {}
        self.source: dict = {}
        self.read_once = False

    def expected(self, key):
        for layer in (self.changes, self.source, DEFAULTS):
            if key in layer:
                return layer[key]
        raise KeyError(key)

    @rule(key=keys, value=values)
    def set_attribute(self, key, value):
        setattr(self.conf, key, value)
        self.changes[key] = value

    @rule(key=keys, value=values)
    def set_item(self, key, value):
        self.conf[key] = value
        self.changes[key] = value

    @rule(mapping=sources, extra=sources)
    def update(self, mapping, extra):
        self.conf.update(mapping, **extra)
        self.changes.update(mapping)
        self.changes.update(extra)

    @rule(key=keys, value=values)
    def setdefault(self, key, value):
        result = self.conf.setdefault(key, value)
        assert result == self.changes.setdefault(key, value)

    @rule(source=sources, force=st.booleans())
    def config_from_object(self, source, force):
        self.conf.config_from_object(dict(source), force=force)
        self.source = dict(source)
        self.read_once = self.read_once or force

    @rule(key=keys)
    def read(self, key):
        try:
            expected = self.expected(key)
        except KeyError:
            assert self.conf.get(key, "<missing>") == "<missing>"
            assert key not in self.conf
        else:
            assert getattr(self.conf, key) == self.conf[key] == self.conf.get(key) == expected
            assert key in self.conf
        self.read_once = True

    @precondition(lambda self: self.read_once)
    @rule()
    def listing(self):
        merged = {**DEFAULTS, **self.source, **self.changes}
        for derived in ("task_default_exchange", "task_default_routing_key"):  # None reads as the queue
            if merged[derived] is None:
                merged[derived] = merged["task_default_queue"]
        assert dict(self.conf.items()) == merged
        assert len(self.conf) == len(merged)
        set_keys = {**self.source, **self.changes}
        assert self.conf.table(censored=False) == {key: merged[key] for key in set_keys}

    @invariant()
    def loads_on_first_read_only(self):
        assert self.conf.loaded is self.read_once


ConfigurationModel.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestConfigurationModel = ConfigurationModel.TestCase


@settings(max_examples=100)
@given(key=keys, prefixed=values, bare=values, change=st.one_of(st.none(), values))
def test_namespace_prefers_the_prefixed_key_within_a_layer_and_changes_across_layers(
        key, prefixed, bare, change):
    conf = Settings(namespace="CELERY")
    conf.config_from_object({f"CELERY_{key.upper()}": prefixed, key: bare})
    assert conf[key] == prefixed
    if change is not None:
        conf[key] = change
        assert conf[key] == change


@given(st.sampled_from(sorted(SETTINGS)), st.sampled_from([None, "CELERY_", "celery_", "PROJ_"]))
def test_a_settings_lookup_names_lead_back_to_it(key, prefix):
    found = lookup_names(key, prefix)
    assert key in found and len(set(found)) == len(found)
    assert found[0] == (key if prefix is None else prefix + (key.upper() if prefix.isupper() else key))
    assert canonical_name(found[0], prefix) == key
    assert all(canonical_name(name, prefix) == key for name in found if name in OLD_TO_NEW)
