"""The worker's Kafka edges: sources (topics whose records start runs or deliver events) and the schema registry.

Their public names are re-exported by `grctl.worker.sources` and `grctl.worker.schema_registry`.
May import `_partition` (its ports).
"""
