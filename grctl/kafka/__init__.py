"""Kafka plumbing for grctl: topic names and admin, the connection, partitioner, size limits, logs.

The toolkit every part reads Kafka with: `reading` (take what a consumer has ready, read ranges
of offsets to their end), `offsets` (read_committed offsets from the admin client), `retry`
(retry while a partition has no leader, with exponential back-off and a deadline).
"""
