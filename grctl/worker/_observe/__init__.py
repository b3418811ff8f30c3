"""What a worker shows of itself: metrics, the view of a session a scrape reads, run spans, the HTTP endpoint.

Imports no other worker room: the session builds the view it hands here, and the observers
it gets from here are seen by the processors through their ports (`_partition.ports`).
"""
