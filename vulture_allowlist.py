"""Names vulture cannot see used (`make lint` runs vulture with this file). Each is called by a
framework or by the test harness, never by our own code; keep the list short."""

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
