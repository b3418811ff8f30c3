"""Helpers shared by tests of every kind: waiting for an observable event, reading topics."""
