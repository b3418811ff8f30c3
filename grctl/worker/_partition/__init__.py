"""One partition's runs: the processor that applies its directives and fires its timers, and what it stages.

Rooms below `grctl.worker` (tests/unit/test_import_rules.py checks them):

- `_partition` (this one): the partition processor (`processor`), its timer queues
  (`timer_queue`), run listing from the run index (`listing`), and the ports it is seen and
  served through (`ports`). Imports no other worker room.
"""
