"""`sandmeter collect` settings (SANDMETER_COLLECTOR_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.names import TOPIC_SAMPLES
from contracts.settings import KafkaPart, LogPart, MetricsPart


class CollectorSettings(KafkaPart, MetricsPart, LogPart):
    """One agent per bare-metal node."""

    model_config = SettingsConfigDict(env_prefix="SANDMETER_COLLECTOR_", frozen=True)

    node_id: str = "node-local"
    topic: str = TOPIC_SAMPLES
    interval_s: float = Field(5.0, gt=0)
    source_timeout_s: float = Field(2.0, gt=0)
    kata_monitor_url: str = "http://127.0.0.1:8090"
    cgroup_root: Path = Path("/sys/fs/cgroup")
    proc_root: Path = Path("/proc")
    sandbox_dirs: tuple[Path, ...] = (Path("/run/vc/sbs"), Path("/run/kata"))
    # containerd's OCI bundles: CRI labels at sandbox creation, before kata-monitor knows it
    bundle_dirs: tuple[Path, ...] = (Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io"),)
    # libcni's cache (`results/<network>-<sandbox id>-<ifname>` names each pod's host-side veth)
    # and sysfs: network bytes come from the host side of the pod network, which outlives the VM
    cni_cache_dir: Path = Path("/var/lib/cni")
    sys_class_net: Path = Path("/sys/class/net")
    tenant_label: str = "cri_namespace"
    tenant_map_file: Path | None = None
    # batches wait here until Kafka acknowledges them; one subdirectory per node id
    spool_dir: Path = Path("/var/lib/sandmeter/spool")
    spool_max_bytes: int = Field(256 << 20, gt=0)
    spool_max_batches: int = Field(100_000, gt=0)
    spool_fsync: bool = True
    metrics_port: int = Field(9464, ge=0, le=65535)  # tests use 127.0.0.1 and port 0 (none)
