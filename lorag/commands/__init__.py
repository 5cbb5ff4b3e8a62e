"""CLI subcommands, one module per package; each exposes `register(app)`."""
