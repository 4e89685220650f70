"""Command-line sub-apps that span domains (the top layer, beside `service.cli`, which mounts them).

`holdgate policy` lives here rather than in `service.policy` because `policy init` probes an upstream with
the gateway's client: the policy package itself decides and never imports the gateway.
"""
