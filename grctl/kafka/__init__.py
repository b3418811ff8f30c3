"""Kafka plumbing for grctl: topic names and admin, producer, consumer, partitioner, headers."""
