"""The bottom layer: what every sandmeter package agrees on. It imports nothing of the project.

- `wire`: the wire format of a sample batch (encode/decode, batch ids, sub-label strings)
- `builder`: BatchBuilder, which assembles one scrape into a batch
- `names`: Kafka topics, ClickHouse tables, wire metric names, Prometheus metric names,
  incident kinds, identifier patterns
- `quantities`: the metered quantities, their columns and units, the priced plan metrics
- `settings`: the settings parts (Kafka, ClickHouse, metrics endpoint, logging) every
  service's settings class is composed of
- `clickhouse`: the ClickHouse connection factory
- `kafka`: the Kafka client arguments (TLS, SASL) and a start-up probe that names a refusal
- `clock`, `metrics`: the wall clock in ms; a Prometheus counter helper
"""

__all__ = ["builder", "clickhouse", "clock", "kafka", "metrics", "names", "quantities", "settings", "wire"]
