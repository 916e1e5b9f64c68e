"""The web console: server-rendered pages for auditors and operators, over the broker's services."""
