"""Tier 1: nodes/_host.free_with_output -- memory held under a key is released once the last object tied to it
(a node output the host caches) is garbage, not before, and only once."""
import gc

from lean_nodes.nodes import _host


class Output:
    pass


def test_release_runs_when_the_last_tied_output_is_dropped():
    calls = []
    a, b = Output(), Output()
    assert _host.free_with_output(a, "k1", lambda: calls.append("k1"))
    assert not _host.free_with_output(a, "k1", lambda: calls.append("again"))  # tied once per object
    assert _host.free_with_output(b, "k1", lambda: calls.append("k1"))
    assert "k1" in _host.tied_keys()
    del a
    gc.collect()
    assert calls == []  # b still holds it
    del b  # plain reference counting: no collector run needed
    assert calls == ["k1"]
    assert "k1" not in _host.tied_keys()


def test_a_failing_release_is_logged_not_raised(caplog):
    c = Output()
    _host.free_with_output(c, "k2", lambda: 1 / 0)
    del c
    gc.collect()
    assert "could not free memory" in caplog.text
