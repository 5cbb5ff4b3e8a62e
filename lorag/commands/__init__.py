"""CLI subcommands, one module per package.

One convention throughout: each module exposes `register(app)`, which adds its commands to
the root app; the function behind `lorag X` (or `lorag G X` in a group) is `X_command`.
"""
