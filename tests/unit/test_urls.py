"""Broker URL parsing and masking, replaying kombu's observed output (spec-detailed §7.6, §7.7)."""

import pytest

from minicelery.exceptions import ImproperlyConfigured
from minicelery.urls import BrokerAddress, mask_broker_url, parse_broker_url, sanitize_url


# Observed: kombu's Connection(url).as_uri(mask='********') with Celery 5.7 / kombu 5.7.
@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://user:pass@host//", "amqp://user:********@host:5672//"),
    ("amqp://user:secretpw@host:5672/vh", "amqp://user:********@host:5672/vh"),
    ("amqp://u:p@h:5673/vh", "amqp://u:********@h:5673/vh"),
    ("amqp://guest@localhost//", "amqp://guest:********@localhost:5672//"),
    ("amqp://", "amqp://guest:********@localhost:5672//"),
    (None, "amqp://guest:********@localhost:5672//"),
    ("amqp://h", "amqp://guest:********@h:5672//"),
    ("amqp://:p@h//", "amqp://guest:********@h:5672//"),
    ("amqp://u:p@h/", "amqp://u:********@h:5672//"),
    ("amqp://u:p@h:5672/%2F", "amqp://u:********@h:5672//"),
    ("amqp://u:p@h//vh", "amqp://u:********@h:5672//vh"),
    ("pyamqp://a:b@c//", "amqp://a:********@c:5672//"),
    ("amqps://u:p@h//", "amqps://u:********@h:5671//"),
])
def test_mask_broker_url_matches_kombu(url, expected):
    assert mask_broker_url(url) == expected


def test_banner_mask_is_two_stars():
    # Observed in the worker banner and the "Connected to" log line.
    assert mask_broker_url("amqp://guest:guest@localhost:5672/celspec", mask="**") == \
        "amqp://guest:**@localhost:5672/celspec"


def test_mask_broker_url_of_another_scheme_masks_only_the_password():
    assert mask_broker_url("redis://:pw@h:6379/0") == "redis://:********@h:6379/0"


def test_mask_broker_url_hides_an_unparsable_amqp_url_whole():
    # The '/' in the password ends the authority, so the port reads as 'p': where the password ends
    # is unknowable and nothing of it may leak.
    assert mask_broker_url("amqp://u:p/ss@h//") == "********"


def test_mask_broker_url_reads_a_bare_host_as_kombu_does():
    assert mask_broker_url("localhost") == "amqp://guest:********@localhost:5672//"
    assert "secret" not in mask_broker_url("u:secret@h")


@pytest.mark.parametrize(("value", "expected"), [
    ("redis://:pw@localhost:6379/0", "redis://:********@localhost:6379/0"),
    ("db+postgresql://scott:tiger@localhost/mydb", "db+postgresql://scott:********@localhost/mydb"),
    ("amqp://u:p@h//", "amqp://u:********@h//"),
    ("rpc://", "rpc://"),
    ("redis://localhost", "redis://localhost"),
    (None, None),
    (5, 5),
])
def test_sanitize_url_matches_kombu(value, expected):
    assert sanitize_url(value) == expected


def test_sanitize_url_masks_up_to_the_last_at_sign_of_the_authority():
    # urllib.parse reads 'p@ss' as the password here; so must the masking.
    assert sanitize_url("redis://u:p@ss@h:6379/0") == "redis://u:********@h:6379/0"


def test_sanitize_url_leaves_a_user_without_password_alone():
    assert sanitize_url("redis://u@h:6379/0") == "redis://u@h:6379/0"
    assert sanitize_url("redis://h:6379/0?x=a:b@c") == "redis://h:6379/0?x=a:b@c"


def test_parse_default_broker():
    assert parse_broker_url(None) == BrokerAddress(
        scheme="amqp", host="localhost", port=5672, userid="guest", password="guest",
        virtual_host="/", ssl=False)
    assert parse_broker_url("amqp://") == parse_broker_url(None)


def test_parse_full_url_unquotes_parts():
    address = parse_broker_url("amqp://us%40er:p%2Fw@Rabbit.example:5673/my%2Fvhost")
    assert address == BrokerAddress("amqp", "rabbit.example", 5673, "us@er", "p/w", "my/vhost", False)


def test_parse_amqps_sets_ssl_and_port_5671():
    address = parse_broker_url("amqps://u:p@h//")
    assert (address.scheme, address.port, address.ssl, address.virtual_host) == ("amqps", 5671, True, "/")


@pytest.mark.parametrize("scheme", ["pyamqp", "librabbitmq", "AMQP"])
def test_parse_amqp_aliases(scheme):
    assert parse_broker_url(f"{scheme}://u:p@h/v").scheme == "amqp"


def test_parse_ipv6_host_round_trips_through_as_uri():
    address = parse_broker_url("amqp://u:p@[::1]:5672//")
    assert address.host == "::1"
    assert address.as_uri() == "amqp://u:********@[::1]:5672//"


def test_unsupported_scheme_names_the_url_with_its_password_masked():
    with pytest.raises(ImproperlyConfigured) as info:
        parse_broker_url("redis://:hunter2@h:6379/0")
    assert "redis://:********@h:6379/0" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_bad_port_is_improperly_configured_without_the_password():
    with pytest.raises(ImproperlyConfigured) as info:
        parse_broker_url("amqp://u:hunter2@h:notaport//")
    assert "hunter2" not in str(info.value)
