"""Other nodes' instances through the bucket (``[store] backend = "s3"``, issue 26).

A location in the index is a place in the packs of the node that wrote the instance. With
packs on S3 every node's sealed packs are in the bucket under ``<prefix>/<node name>/``, so
a node can read another's instance: the index hands it out with the pack id
``pack | number << 48`` (the writer's number from the ``nodes`` table), and the store, once
told which name a number stands for (``Store.name_node``), reads that pack from the bucket
by ranged GETs. This module ties the two together where the archive opens them; with the
default local store none of it runs and another node's instance stays refused.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from duckpacs import store_config
from duckpacs.errors import ConfigError


class _NamesNodes(Protocol):
    """The part of ``duckpacs._core.Store`` used here (a store opened with ``remote=``)."""

    def name_node(self, number: int, name: str) -> None: ...


def _pg_index(index: Any) -> Any:
    from duckpacs.index.pg.db import PgIndex

    if not isinstance(index, PgIndex):
        raise ConfigError(
            'store.backend = "s3" needs index.backend = "postgres": the nodes find each '
            "other's packs through the shared index"
        )
    return index


def connect(index: Any, store: Any, *, writer: bool) -> None:
    """With packs on S3: have ``index`` return other nodes' instances at their remote
    locations, each node named to ``store`` before its first one. A ``writer`` registers
    its own number first, so the other nodes can name its packs. Nothing without S3."""
    if store_config.configured() is None:
        return
    pg = _pg_index(index)
    if writer:
        pg.node_number()
    names = cast(_NamesNodes, store)
    pg.read_remote(lambda number, name: names.name_node(number, name))


def name_registered_nodes(index: Any, store: Any) -> None:
    """With packs on S3: name every registered node to ``store`` at once, for a store that
    reads locations another process looked up (the server, over its local socket)."""
    if store_config.configured() is None:
        return
    names = cast(_NamesNodes, store)
    for node in _pg_index(index).nodes():
        if node["number"] is not None:
            names.name_node(int(node["number"]), str(node["name"]))
