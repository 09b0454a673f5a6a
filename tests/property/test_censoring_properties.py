"""Censoring and URL masking invariants: no secret ever reaches humanize()/table(), nothing else changes."""

import string
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from minicelery.censoring import HIDDEN_SETTINGS, censor
from minicelery.config import Settings
from minicelery.urls import mask_broker_url, parse_broker_url, sanitize_url

MASK = "********"
HIDDEN_WORDS = ["API", "TOKEN", "KEY", "SECRET", "PASS", "PROFANITIES_LIST", "SIGNATURE", "DATABASE",
                "BEAT_DBURI"]
_DICT_MEMBERS = set(dir(dict))

identifier = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
plain_key = identifier.filter(
    lambda k: not HIDDEN_SETTINGS.search(k) and "broker_" not in k and "backend" not in k
    and not k.startswith("_") and k not in _DICT_MEMBERS)


@st.composite
def hidden_key(draw):
    word = draw(st.sampled_from(HIDDEN_WORDS))
    word = "".join(c.lower() if draw(st.booleans()) else c for c in word)  # any case matches
    key = draw(st.sampled_from(["", "my_", "x"])) + word + draw(st.sampled_from(["", "_id", "s"]))
    return key + "_" if key in _DICT_MEMBERS else key  # table() leaves out 'keys', 'items'...


# Secrets carry a marker no key, host or mask can contain, so finding one in the output is a leak.
secret_text = st.text(string.ascii_letters + string.digits + "!#$%&*+-.:=?@^_~/ ", min_size=1, max_size=16
                      ).map(lambda s: "QZX" + s)
plain_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(string.ascii_letters + " .-", max_size=12))
plain_value = st.recursive(plain_scalar, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(plain_key, inner, max_size=3), max_leaves=8)


host_name = st.builds(lambda first, rest: first + rest, st.sampled_from(string.ascii_lowercase),
                      st.text(string.ascii_lowercase + string.digits + "-.", max_size=8))


@st.composite
def url_with_password(draw):
    scheme = draw(st.sampled_from(["amqp", "amqps", "pyamqp", "redis", "db+postgresql", "rediss"]))
    user = draw(st.text(string.ascii_lowercase, max_size=6))
    password = draw(secret_text)
    host = draw(host_name)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    path = draw(st.sampled_from(["", "/", "//", "/0", "/vh", "/%2F"]))
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{port}" if port else "")
    return f"{scheme}://{netloc}{path}", password


def leaks(text, secret):
    return secret in text or quote(secret, safe="") in text


@settings(max_examples=100)
@given(st.dictionaries(hidden_key(), st.one_of(secret_text, st.lists(secret_text, max_size=2), st.none()),
                       min_size=1, max_size=4),
       st.dictionaries(plain_key, plain_value, max_size=4))
def test_hidden_keys_never_show_their_values(hidden, plain):
    conf = Settings({**plain, **hidden})
    text, table = conf.humanize(), conf.table()
    for key, value in hidden.items():
        assert table[key] == MASK
        for secret in value if isinstance(value, list) else [value]:
            assert secret is None or not leaks(text, secret)


@settings(max_examples=100)
@given(st.dictionaries(plain_key, plain_value, max_size=6))
def test_plain_values_are_untouched(plain):
    conf = Settings(plain)
    assert censor(plain) == plain
    assert conf.table() == conf.table(censored=False) == plain


@settings(max_examples=100)
@given(st.sampled_from(["broker_url", "BROKER_READ_URL", "broker_write_url", "result_backend", "redis_url",
                        "CELERY_BROKER_URL", "anything"]),
       url_with_password(), st.booleans())
def test_no_url_password_reaches_the_output(key, url_and_password, nested):
    url, password = url_and_password
    changes = {"outer": {key: url}} if nested else {key: url}
    conf = Settings(changes)
    assert not leaks(conf.humanize(), password)
    assert not leaks(repr(conf.table()), password)
    assert not leaks(conf.humanize(with_defaults=True), password)


censorable = st.dictionaries(
    st.one_of(plain_key, hidden_key(), st.sampled_from(["broker_url", "result_backend", "x_url"])),
    st.recursive(st.one_of(plain_scalar, secret_text, url_with_password().map(lambda pair: pair[0])),
                 lambda inner: st.dictionaries(st.one_of(plain_key, hidden_key()), inner, max_size=3),
                 max_leaves=6),
    max_size=5)


@settings(max_examples=100)
@given(censorable)
def test_censoring_is_idempotent(mapping):
    once = censor(mapping)
    assert censor(once) == once


@settings(max_examples=100)
@given(url_with_password())
def test_sanitize_url_is_idempotent_and_hides_the_password(url_and_password):
    url, password = url_and_password
    masked = sanitize_url(url)
    assert not leaks(masked, password)
    assert sanitize_url(masked) == masked


@st.composite
def amqp_url(draw):
    user = draw(st.text(min_size=1, max_size=8))
    password = draw(secret_text)
    host = draw(host_name)
    port = draw(st.integers(1, 65535))
    vhost = draw(st.text(min_size=1, max_size=8))
    scheme = draw(st.sampled_from(["amqp", "amqps", "pyamqp"]))
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
    url = f"{scheme}://{netloc}/{quote(vhost, safe='')}"
    return url, password


@settings(max_examples=100)
@given(amqp_url())
def test_masked_broker_url_round_trips(url_and_password):
    url, password = url_and_password
    masked = mask_broker_url(url)
    assert not leaks(masked, password)
    original, reparsed = parse_broker_url(url), parse_broker_url(masked)
    assert reparsed.password == MASK
    for field in ("scheme", "host", "port", "userid", "virtual_host", "ssl"):
        assert getattr(reparsed, field) == getattr(original, field)
    assert mask_broker_url(masked) == masked
