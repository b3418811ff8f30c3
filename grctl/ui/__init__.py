"""The web UI of `grctl ui`: namespace, runs, a run's page, and actions (see `app`).

Installed with the ``ui`` extra (``pip install 'grctl[ui]'``: Starlette, Uvicorn, Jinja2,
python-multipart); nothing a worker or a client imports loads this package.

May import: errors, defaults, settings, models, codec, engine, kafka, client, display and
logging_setup, never the CLI: it reads with the client's readers (`grctl.client.reader`,
`grctl.client.namespace`) and acts through a `Client`.
"""
