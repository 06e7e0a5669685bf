"""Online backup and restore of a data folder (``duckpacs backup``, ``duckpacs restore``).

- :mod:`~duckpacs.backup.manifest`: the backup folder's layout and its manifest, the one
  file that says what the last complete backup holds (written last, fsync + rename).
- :mod:`~duckpacs.backup.hold`: how a backup keeps packs from being rewritten while it
  copies them (the running server's densifier over its local socket, or the store's locks).
- :mod:`~duckpacs.backup.take`: one backup run: the packs up to their last whole record,
  only what is new since the previous run, then the small files (journals, users,
  configuration, SQLite databases).
- :mod:`~duckpacs.backup.restore`: a backup into a new data folder, the index rebuilt from
  the restored store.
- :mod:`~duckpacs.backup.status`: ``DATA/backup.json``, the last completed backup, and its
  age for the admin page.

What a backup holds, and why not the index: the store is the source of truth and the index
is rebuilt from it (``reindex``) at about 16,000 instances a second here (20,000 in 1.3 s,
``bench/bench_recovery.py``), so a restore rebuilds it instead of copying ``index.duckdb``.
Copying the index consistently while ``serve`` writes it would have to stop its committer
for the length of the copy, and its marks would have to agree with the copied packs; a
rebuilt index agrees with them by construction.
"""
