"""One membership of a worker in the consumer group: the session and everything that lives as long as it.

The session (`session`), its group commit and Kafka transaction (`commit`), its Kafka clients
(`clients`), rebalances (`rebalance`) and restores (`restore`), the step executor (`executor`),
the query answerer (`queries`), the timer loop (`timers`), the directory of topics steps emit
to (`topics`). May import `_partition`, `_observe` and `_edges`.
"""
