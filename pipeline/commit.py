"""Commit: offsets behind a written checkpoint are committed to Kafka.

The checkpoint in ClickHouse is what the processor resumes from; Kafka's committed offsets
follow it, for tools that read a group's progress (and for `kafka-consumer-groups`). Commits
are asynchronous and a failed one is only logged (a rebalance in progress, the broker away):
the next checkpoint commits again. Written rows without a plan carry nothing to commit yet.
"""

from __future__ import annotations

from pipeline.kafka import Consumer
from pipeline.steps import Written


class CommitStep:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def submit(self, msg: Written) -> None:
        if msg.checkpoints and msg.offsets:
            self.consumer.commit(msg.offsets)

    def poll(self) -> None:
        pass

    def join(self) -> None:
        pass

    def close(self) -> None:
        pass

    def pending(self) -> bool:
        return False
