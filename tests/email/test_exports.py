"""`bots.email` exports the channel and the router, nothing else."""

import bots.email


def test_exported_members():
    assert sorted(bots.email.__all__) == ["EmailChannel", "router"]
    assert all(hasattr(bots.email, name) for name in bots.email.__all__)
