"""The web UI of `grctl ui`: namespace, runs, a run's page, and actions (see `app`).

May import: every room but `dev`: it reads like the CLI (`grctl.cli.reader`) and acts through
a `Client`.
"""
