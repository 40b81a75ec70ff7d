"""The host side of each pod's network: which interfaces, their counters, the final reading."""

from __future__ import annotations

import json
from pathlib import Path

from collectors.podnet import PodNetSource, parse_netdev
from contracts import names as n

NETDEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier \
compressed
    lo: 4096 40 0 0 0 0 0 0 4096 40 0 0 0 0 0 0
vethaaaa: 700 7 0 0 0 0 0 0 1500 15 0 0 0 0 0 0
vethbbbb: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0
  cni0: 710 8 0 0 0 0 0 0 1520 17 0 0 0 0 0 0
garbage line
"""


def node(tmp_path: Path, netdev: str = NETDEV) -> PodNetSource:
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/dev").write_text(netdev)
    (tmp_path / "sys/class/net/cni0/bridge").mkdir(parents=True)
    results = tmp_path / "cni/results"
    results.mkdir(parents=True)
    for sb, veth in (("sb1", "vethaaaa"), ("sb2", "vethbbbb")):
        interfaces = [{"name": "cni0"}, {"name": veth}, {"name": "eth0", "sandbox": f"/var/run/netns/{sb}"}]
        doc = {"kind": "cniCacheV1", "containerId": sb, "result": {"interfaces": interfaces}}
        (results / f"cbr0-{sb}-eth0").write_text(json.dumps(doc))
    (results / "cbr0-sb3-eth0").write_text("{not json")
    return PodNetSource(tmp_path / "proc", tmp_path / "cni", tmp_path / "sys/class/net", lambda: 5)


def rows(r: object) -> dict[tuple[str, str], float]:
    rs = r.rows  # type: ignore[attr-defined]
    return {(s, m): v for s, m, v in zip(rs.sandbox, rs.metric, rs.value, strict=True)}


def test_parse_netdev_reads_bytes_and_skips_what_it_cannot() -> None:
    got = parse_netdev(NETDEV)
    assert got["vethaaaa"] == (700, 1500) and got["lo"] == (4096, 4096) and "garbage line" not in got


def test_guest_bytes_come_from_the_host_side_of_its_veth_not_from_the_bridge(tmp_path: Path) -> None:
    src = node(tmp_path)
    r = src.read(frozenset({"sb1", "sb2", "sb3"}))
    # the host side receives what the guest sends: guest rx = host tx
    assert rows(r) == {
        ("sb1", n.M_NET_RX_BYTES): 1500, ("sb1", n.M_NET_TX_BYTES): 700,
        ("sb2", n.M_NET_RX_BYTES): 20, ("sb2", n.M_NET_TX_BYTES): 10,
    }  # fmt: skip
    assert r.errors == 0  # sb3 has no usable CNI result: no pod network (yet), nothing to say


def test_the_final_reading_uses_the_snapshot_taken_when_the_stop_was_seen(tmp_path: Path) -> None:
    src = node(tmp_path)
    src.on_start("sb1")  # learnt while the CNI result is there
    (tmp_path / "cni/results/cbr0-sb1-eth0").unlink()  # CNI DEL came ...
    (tmp_path / "proc/net/dev").write_text(NETDEV.replace("vethaaaa", "vethgone"))  # ... and took the veth
    snap = {str(tmp_path / "proc/net/dev"): NETDEV.replace("700 7", "900 9")}
    r = src.read_final("sb1", snap)
    assert rows(r) == {("sb1", n.M_NET_RX_BYTES): 1500, ("sb1", n.M_NET_TX_BYTES): 900} and r.errors == 0
    late = src.read_final("sb1", {})  # without a snapshot, after CNI DEL: counted, nothing made up
    assert rows(late) == {} and late.errors == 1
