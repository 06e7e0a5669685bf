"""Several nodes, one archive (issue 26): moving an embedded archive into the shared one
(:mod:`.move`) and checking every node's instances through the bucket (:mod:`.verify`).
``duckpacs cluster`` is their command line; ``serve`` itself needs neither."""
