"""A free port range for a private test Redis Cluster (streamrec.localcluster)."""

from __future__ import annotations

import random

from streamrec.localcluster import BUS_OFFSET, NODES
from streamrec.stack_processes import port_bindable


def free_cluster_base() -> int:
    """A first port whose 6 ports and cluster bus ports are all free (below the usual ephemeral ports,
    32768 and up, so no outgoing connection takes one between this check and the start)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(11_000, 14_000)
        if all(port_bindable("127.0.0.1", p + bus) for p in range(base, base + NODES) for bus in (0, BUS_OFFSET)):
            return base
    raise RuntimeError("no free port range for the test cluster")
