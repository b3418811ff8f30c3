"""`python -m grctl`: the `grctl` command, for environments without its console script on PATH."""

from grctl.cli.main import main

if __name__ == "__main__":
    main()
