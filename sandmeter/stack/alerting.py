"""Prometheus and Alertmanager of the local stack: Debian's binaries as child processes, every
file of theirs (generated configs, TSDB, silences) under the stack's state directory.

Prometheus scrapes what the stack is told to watch (`watch`): one targets file per job, which
it re-reads on its own. Alerts about a job are loaded only once its targets have been scraped:
a rule evaluated before the first scrape sees no `up` series and its `absent()` would fire.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboards import COLLECTOR_JOB, alertmanager_yaml, rules_yaml, stack_prometheus_yaml
from sandmeter.stack.procs import ManagedProcess, ServiceError, StartTimeoutError
from sandmeter.stack.settings import StackSettings


@dataclass(frozen=True, order=True)
class Target:
    """A service's /metrics on 127.0.0.1:`port`; a collector's names its node."""

    port: int
    node: str | None = None


def _binary(*names: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
    raise ServiceError(
        f"{names[0]} is not installed; `make deps` installs it (apt-get install prometheus prometheus-alertmanager), "
        "or set SANDMETER_STACK_ALERTING=false"
    )


def _get(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _write_atomic(path: Path, text: str) -> None:
    """Prometheus re-reads targets files on change: it must never see half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Alerting:
    def __init__(self, s: StackSettings, state_dir: Path) -> None:
        self.s = s
        self.prom_dir = (state_dir / "prometheus").resolve()
        self.am_dir = (state_dir / "alertmanager").resolve()
        self.targets_dir = self.prom_dir / "targets"
        prom_cfg, am_cfg = self.prom_dir / "prometheus.yml", self.am_dir / "alertmanager.yml"
        self.prometheus = ManagedProcess(
            name="prometheus",
            argv=[
                _binary("prometheus"),
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={self.prom_dir / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
                # links in alerts (generatorURL) point here, not at the machine's host name
                f"--web.external-url=http://127.0.0.1:{s.prometheus_port}/",
                "--web.enable-lifecycle",  # POST /-/reload when the watched jobs change
                "--log.level=warn",
            ],
            state_dir=state_dir,
            ports=[s.prometheus_port],
            ready=lambda: _ready(s.prometheus_port),
            marker=f"--config.file={prom_cfg}",
        )
        self.alertmanager = ManagedProcess(
            name="alertmanager",
            argv=[
                _binary("prometheus-alertmanager", "alertmanager"),  # Debian's name, then upstream's
                f"--config.file={am_cfg}",
                f"--storage.path={self.am_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{s.alertmanager_port}",
                f"--web.external-url=http://127.0.0.1:{s.alertmanager_port}/",
                "--cluster.listen-address=",  # one instance: no gossip port
                "--log.level=warn",
            ],
            state_dir=state_dir,
            ports=[s.alertmanager_port],
            ready=lambda: _ready(s.alertmanager_port),
            marker=f"--config.file={am_cfg}",
        )

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.s.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.s.alertmanager_port}"

    def start(self, timeout_s: float) -> list[str]:
        """Starts what is not running (Alertmanager first); returns the names it started."""
        s = self.s
        started = []
        if self.alertmanager.pid() is None:
            self.am_dir.mkdir(parents=True, exist_ok=True)
            am = alertmanager_yaml(s.alert_webhook_url, s.alert_group_wait_s, s.alert_group_interval_s, 4 * 3600)
            (self.am_dir / "alertmanager.yml").write_text(am)
        if self.alertmanager.start(timeout_s):
            started.append("alertmanager")
        try:
            if self.prometheus.pid() is None:
                self.targets_dir.mkdir(parents=True, exist_ok=True)
                watched = self.watched()
                self._configure(watched, rule_jobs=())
                if self.prometheus.start(timeout_s):
                    started.append("prometheus")
                if watched:  # watched before a restart: their alerts once they are scraped again
                    self._arm(watched, timeout_s)
        except ServiceError:
            if "alertmanager" in started:
                self.alertmanager.stop()
            raise
        return started

    def stop(self) -> list[str]:
        return [p.name for p in (self.prometheus, self.alertmanager) if p.stop()]

    def watched(self) -> dict[str, list[Target]]:
        """The targets Prometheus scrapes, by job (its targets files)."""
        out = {}
        for f in sorted(self.targets_dir.glob("*.json")):
            entries = json.loads(f.read_text())
            out[f.stem] = sorted(
                Target(int(e["targets"][0].rsplit(":", 1)[1]), e.get("labels", {}).get("node")) for e in entries
            )
        return out

    def watch(self, targets: Mapping[str, Sequence[Target]], timeout_s: float) -> None:
        """Makes Prometheus scrape exactly `targets` (job -> its targets; an empty mapping
        watches nothing) and load the alerts of those jobs once each target was scraped."""
        if self.prometheus.pid() is None:
            raise ServiceError("prometheus is not running: start the stack first (`sandmeter stack up`)")
        new = {job: sorted(ts) for job, ts in targets.items() if ts}
        old = self.watched()
        for job in old.keys() - new.keys():
            (self.targets_dir / f"{job}.json").unlink()
        for job, ts in new.items():
            entries = [
                {
                    "targets": [f"127.0.0.1:{t.port}"],
                    "labels": {"node": t.node} if job == COLLECTOR_JOB and t.node else {},
                }
                for t in ts
            ]
            _write_atomic(self.targets_dir / f"{job}.json", json.dumps(entries, indent=1))
        # alerts of jobs whose targets changed wait for the new targets' first scrape
        self._configure(new, rule_jobs=[job for job in new if old.get(job) == new[job]])
        self._reload()
        self._arm(new, timeout_s)

    def _configure(self, jobs: Mapping[str, Sequence[Target]], rule_jobs: Sequence[str]) -> None:
        s = self.s
        _write_atomic(self.prom_dir / "rules.yml", rules_yaml(rule_jobs, s.alert_for_max_s))
        _write_atomic(
            self.prom_dir / "prometheus.yml", stack_prometheus_yaml(jobs, s.alertmanager_port, s.scrape_interval_s)
        )

    def _arm(self, jobs: Mapping[str, Sequence[Target]], timeout_s: float) -> None:
        self._wait_scraped(jobs, timeout_s)
        self._configure(jobs, rule_jobs=list(jobs))
        self._reload()

    def _reload(self) -> None:
        req = urllib.request.Request(self.prometheus_url + "/-/reload", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10).close()  # synchronous: the new rules are loaded
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"prometheus refused its generated config: {exc.read().decode().strip()}") from None
        except OSError as exc:
            raise ServiceError(f"prometheus at {self.prometheus_url} does not answer ({exc}); see its log") from None

    def _wait_scraped(self, jobs: Mapping[str, Sequence[Target]], timeout_s: float) -> None:
        """Until each target was scraped once (up or down) and Alertmanager is known. Both wait
        for Prometheus' discovery, which hands over changes every 5 s."""
        want = {(job, f"127.0.0.1:{t.port}") for job, ts in jobs.items() for t in ts}
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                active = _get(self.prometheus_url + "/api/v1/targets?state=active")["data"]["activeTargets"]
                scraped = {(t["labels"]["job"], t["labels"]["instance"]) for t in active if t["health"] != "unknown"}
                ams = _get(self.prometheus_url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
                if want <= scraped and ams:
                    return
            if time.monotonic() >= deadline:
                raise StartTimeoutError(
                    f"prometheus did not scrape {sorted(want)} within {timeout_s:.0f} s; see {self.prometheus.logfile}"
                )
            time.sleep(0.2)
