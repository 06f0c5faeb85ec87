"""The local Redis Cluster's reading of CLUSTER INFO / CLUSTER NODES and its health rules (no servers)."""

from __future__ import annotations

from streamrec.localcluster import (
    NODES,
    ClusterHealth,
    LocalRedisCluster,
    NodeView,
    _parse_info,
    _serving_masters,
)
from streamrec.settings import Settings

NODES_TEXT = """\
07c3 127.0.0.1:17000@27000 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:17001@27001 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:17002@27002 master,fail - 0 1426238317741 3 connected 10923-16383
6ec2 127.0.0.1:17003@27003 slave 07c3 0 1426238316232 1 connected
824f 127.0.0.1:17004@27004 slave 67ed 0 1426238318243 2 connected
e7d1 127.0.0.1:17005@27005 master - 0 1426238317741 7 connected
"""


def test_cluster_info_is_read_as_pairs() -> None:
    info = _parse_info("cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:6\r\n")
    assert info == {"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_known_nodes": "6"}


def test_serving_masters_are_masters_with_slots_that_do_not_fail() -> None:
    assert _serving_masters(NODES_TEXT) == 2  # 17002 fails, 17005 (a promoted replica) holds no slot yet


def _view(port: int, state: str = "ok", known: int = NODES, masters: int = 3, slots: int = 16384,
          keys: int = 0) -> NodeView:
    return NodeView(port, state, slots, known, masters, keys)


def test_healthy_only_when_every_node_answers_ok_and_sees_the_whole_cluster() -> None:
    full = ClusterHealth(tuple(_view(17000 + i) for i in range(NODES)))
    assert full.ok and not full.fresh
    assert full.summary() == "6 nodes, 3 masters"
    one_down = ClusterHealth(full.views[:-1])
    assert not one_down.ok
    assert one_down.summary() == "6 nodes, 3 masters; 5/6 nodes answer, cluster_state:ok"
    failing = ClusterHealth((_view(17000, state="fail", masters=2), *full.views[1:]))
    assert not failing.ok
    assert ClusterHealth(()).summary() == "no node answers"


def test_fresh_means_six_empty_nodes_that_know_only_themselves() -> None:
    new = ClusterHealth(tuple(_view(17000 + i, state="fail", known=1, masters=0, slots=0) for i in range(NODES)))
    assert new.fresh and not new.ok
    with_data = ClusterHealth((_view(17000, state="fail", known=1, masters=0, slots=0, keys=3), *new.views[1:]))
    assert not with_data.fresh


def test_six_ports_from_the_setting() -> None:
    cluster = LocalRedisCluster(Settings(redis_cluster_port=41000))
    assert cluster.ports == [41000, 41001, 41002, 41003, 41004, 41005]
    assert cluster.port_range == "41000-41005"
