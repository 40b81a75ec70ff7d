"""Names vulture cannot see used (`make lint` runs vulture with this file). Each is called by a
framework or by the test harness, never by our own code; keep the list short."""

from fastapi import FastAPI

from billing import models as _m
from collectors.agent import CollectorAgent
from collectors.lifecycle import SandboxWatcher
from collectors.sim.render import NodeTree
from collectors.sim.runner import Simulator, _Handler, _KataMonitor
from sandmeter.stack import Cluster, receiver

_Handler.do_GET  # http.server dispatches GET here
_Handler.log_message  # http.server's logging hook, silenced
_KataMonitor.handle_error  # socketserver's error hook, silenced
receiver._Handler.do_POST  # http.server dispatches Alertmanager's webhook POSTs here
_KataMonitor.daemon_threads  # socketserver reads it
Simulator.set_cpu_load  # the scaling e2e test drives the simulated load
CollectorAgent.batches_made  # the delivery e2e test counts the batches made
SandboxWatcher.event_driven  # the lifecycle test checks which mode the watcher runs in
NodeTree.create  # source tests build a node's files for a sandbox in one call
Cluster.start_node  # the cluster e2e test stops and restarts a replica
Cluster.stop_node
FastAPI.openapi  # FastAPI calls the spec builder billing/app.py installs
# the billing API's response models: these fields are read by the JSON encoder and the spec only
_m.Line.unit_price, _m.Line.exact_amount, _m.Invoice.period_start, _m.Invoice.period_end
_m.Invoice.rounding, _m.Invoice.finalized_at, _m.Invoice.generated_at, _m.Invoice.finalizes_after
_m.InvoiceSummary.finalized_at, _m.Cost.rounding, _m.Incident.closed, _m.Load.panic
_m.Recommendation.desired_replicas, _m.Recommendation.ready_replicas, _m.Recommendation.per_replica_target
_m.MetricValues.cpu_used_ms, _m.MetricValues.vcpu_alloc_ms, _m.MetricValues.mem_used_byte_ms
_m.MetricValues.mem_alloc_byte_ms, _m.MetricValues.io_read_bytes, _m.MetricValues.io_write_bytes
_m.MetricValues.net_rx_bytes, _m.MetricValues.net_tx_bytes
