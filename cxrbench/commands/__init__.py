"""CLI subcommands, one module each (see :mod:`cxrbench.cli`)."""
