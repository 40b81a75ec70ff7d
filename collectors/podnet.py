"""Network bytes of each sandbox from the host side of its pod network, which outlives the VM.

kata-monitor's `kata_hypervisor_netdev` is QEMU's `/proc/<pid>/net/dev`: it vanishes with
QEMU, so the bytes after the last scrape of a sandbox were never read (a 20 ms sandbox had
none at all). The pod's network namespace and its veth pair are made by CNI before the
sandbox starts and removed by CNI DEL, which containerd runs only after the shim has stopped
and deleted the sandbox (StopPodSandbox: stop the sandbox container, then tear the network
down). So the host-side veth still counts every byte the guest sent or received when the
sandbox directory goes, and a final reading then is complete.

Which host interface belongs to which sandbox: libcni caches each ADD's result in
`<cache>/results/<network>-<container id>-<ifname>` (the container id is the sandbox id) and
deletes it on DEL. Its `interfaces` without a `sandbox` (namespace) field are on the host;
bridges among them (`/sys/class/net/<if>/bridge` exists) are shared, not the pod's. The
counters come from the host's `/proc/net/dev`, one read for all sandboxes: the host side
receives what the guest sends, so guest rx = host tx and guest tx = host rx.

If CNI DEL wins the race with the final reading, the sandbox's bytes since its last reading
are lost and the final read counts an error (docs/metering.md bounds it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from collectors.base import Reading, read_file
from contracts import names as n


def parse_netdev(text: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev -> {interface: (rx_bytes, tx_bytes)}."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        f = rest.split()
        if sep and len(f) >= 9 and f[0].isdigit() and f[8].isdigit():
            out[name.strip()] = (int(f[0]), int(f[8]))
    return out


class PodNetSource:
    name = "pod_net"

    def __init__(self, proc: Path, cni_cache: Path, sys_class_net: Path, clock_ms: Callable[[], int]) -> None:
        self.netdev = proc / "net" / "dev"
        self.results = cni_cache / "results"
        self.sys_class_net = sys_class_net
        self.clock_ms = clock_ms
        self._ifaces: dict[str, tuple[str, ...]] = {}  # sandbox -> its host-side interfaces

    def learn(self, sandbox: str) -> tuple[str, ...]:
        """The sandbox's host interfaces from libcni's cache (empty when it has no result)."""
        known = self._ifaces.get(sandbox)
        if known:
            return known
        found: list[str] = []
        try:
            names = [f for f in os.listdir(self.results) if f"-{sandbox}-" in f]
        except OSError:
            names = []
        for f in names:
            try:
                doc = json.loads(read_file(self.results / f))
                ifs = doc["result"]["interfaces"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for i in ifs if isinstance(ifs, list) else []:
                name = i.get("name") if isinstance(i, dict) else None
                on_host = isinstance(name, str) and name and "sandbox" not in i and name not in found
                if on_host and not (self.sys_class_net / str(name) / "bridge").exists():
                    found.append(str(name))
        if found:
            self._ifaces[sandbox] = tuple(found)
        return tuple(found)

    def _counters(self) -> dict[str, tuple[int, int]]:
        return parse_netdev(read_file(self.netdev))

    def _add(self, out: Reading, sandbox: str, dev: dict[str, tuple[int, int]], final: bool) -> None:
        ifs = self.learn(sandbox)
        if not ifs:
            if final:
                out.error(f"{sandbox}: no host interface in the CNI cache: network bytes since the last reading lost")
            return  # a sandbox without a pod network (host network), or CNI not done yet
        missing = [i for i in ifs if i not in dev]
        if missing:
            out.error(f"{sandbox}: host interface {missing[0]} gone (CNI DEL came first): network bytes lost")
            return
        rx = sum(dev[i][1] for i in ifs)  # what the host side sent, the guest received
        tx = sum(dev[i][0] for i in ifs)
        out.rows.add(sandbox, n.M_NET_RX_BYTES, "", rx)
        out.rows.add(sandbox, n.M_NET_TX_BYTES, "", tx)

    def read(self, sandboxes: frozenset[str]) -> Reading:
        out = Reading(self.name, self.clock_ms())
        try:
            dev = self._counters()
        except OSError as exc:
            out.error(f"{self.netdev}: {exc}")
            return out
        for sb in sorted(sandboxes):
            self._add(out, sb, dev, final=False)
        if len(self._ifaces) > 2 * len(sandboxes) + 100:  # stops whose final read never came
            for sb in [s for s in self._ifaces if s not in sandboxes]:
                del self._ifaces[sb]
        return out

    def read_final(self, sandbox: str, snapshot: Mapping[str, str] | None = None) -> Reading:
        """The last reading of a sandbox whose directory just went (from the /proc/net/dev the
        watcher read when it saw the stop, where it has one); then forgets the sandbox."""
        out = Reading(self.name, self.clock_ms())
        text = (snapshot or {}).get(str(self.netdev))
        try:
            self._add(out, sandbox, parse_netdev(text) if text is not None else self._counters(), final=True)
        except OSError as exc:
            out.error(f"{self.netdev}: {exc}")
        self._ifaces.pop(sandbox, None)
        return out

    def on_start(self, sandbox: str) -> None:
        self.learn(sandbox)  # while the CNI result is certainly there
