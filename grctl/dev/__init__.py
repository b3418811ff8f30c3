"""Development helpers: a real local Apache Kafka (KRaft) run from its jars, without Docker."""
