"""The state names and the sets that classify them (Celery's celery.states)."""

from __future__ import annotations

from minicelery import states


def test_names_are_celerys_strings():
    names = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", "RETRY",
             "IGNORED"]
    assert [getattr(states, name) for name in names] == names


def test_ready_states():
    assert {"SUCCESS", "FAILURE", "REVOKED"} == states.READY_STATES


def test_unready_states():
    assert {"PENDING", "RECEIVED", "STARTED", "REJECTED", "RETRY"} == states.UNREADY_STATES


def test_exception_and_propagate_states():
    assert {"RETRY", "FAILURE", "REVOKED"} == states.EXCEPTION_STATES
    assert {"FAILURE", "REVOKED"} == states.PROPAGATE_STATES


def test_all_states_leaves_out_rejected_and_ignored_like_celery():
    assert {"PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"} == states.ALL_STATES


def test_ready_and_unready_do_not_overlap_and_propagating_states_are_ready():
    assert not states.READY_STATES & states.UNREADY_STATES
    assert states.PROPAGATE_STATES <= states.READY_STATES
    assert states.PROPAGATE_STATES <= states.EXCEPTION_STATES


def test_the_sets_are_frozen():
    for group in (states.READY_STATES, states.UNREADY_STATES, states.EXCEPTION_STATES,
                  states.PROPAGATE_STATES, states.ALL_STATES):
        assert isinstance(group, frozenset)
