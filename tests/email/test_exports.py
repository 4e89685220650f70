"""`bots.email` exports the channel, the router and the plug-in, nothing else."""

import bots.email


def test_exported_members():
    assert sorted(bots.email.__all__) == ["EmailChannel", "plugin", "router"]
    assert all(hasattr(bots.email, name) for name in bots.email.__all__)
