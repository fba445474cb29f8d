"""The API prompt as a graph: what a link is, node ids, who feeds whom, execution order."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

from .errors import WorkflowFormatError


def is_link(value) -> bool:
    """An API input value that is a link ``["<node id>", <output index>]`` (as ComfyUI's executor)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def node_ids(api: Mapping) -> dict[str, int]:
    """The numeric id of every node: LiteGraph ids are integers, API keys only strings."""
    ids = {}
    for key in api:
        try:
            number = int(str(key))
        except ValueError:
            number = -1
        if number < 1 or str(number) != str(key):
            raise WorkflowFormatError(f"node id {key!r}: UI workflows need positive integer node ids "
                                      f"(as the frontend writes); renumber the API prompt")
        ids[str(key)] = number
    return ids


def link_sources(node: Mapping) -> list[str]:
    """The source node ids of a node's linked inputs, in input order, repeats kept (layout weighs them)."""
    return [v[0] for v in (node.get("inputs") or {}).values() if is_link(v)]


def users_of(deps: Mapping[str, list[str]]) -> defaultdict[str, list[str]]:
    """The inverse of a node -> sources map."""
    users = defaultdict(list)
    for k, ds in deps.items():
        for d in ds:
            users[d].append(k)
    return users


def topological(api: Mapping, ids: Mapping[str, int]) -> list[str]:
    """Node ids in execution order (Kahn, ties by numeric id); raises on a cycle."""
    deps = {k: sorted({s for s in link_sources(api[k]) if s in api}, key=lambda s: ids[s]) for k in api}
    users = users_of(deps)
    remaining = {k: len(ds) for k, ds in deps.items()}
    ready = sorted([k for k, n in remaining.items() if n == 0], key=lambda s: ids[s])
    out = []
    while ready:
        k = ready.pop(0)
        out.append(k)
        for u in users[k]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
        ready.sort(key=lambda s: ids[s])
    if len(out) != len(api):
        cyclic = sorted(set(api) - set(out), key=lambda s: ids[s])
        raise WorkflowFormatError(f"the graph has a cycle through nodes {cyclic}")
    return out
