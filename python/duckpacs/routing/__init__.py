"""Forwarding: routing rules, the durable queue and its delivery (``[[route]]``,
``duckpacs send``, ``duckpacs queue``)."""
