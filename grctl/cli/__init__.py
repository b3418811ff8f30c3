"""The ``grctl`` command line (``grctl.cli.main:main``); command groups live in sibling modules."""
