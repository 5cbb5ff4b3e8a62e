"""The lorag app shell: the `lorag` CLI and its YAML config. Nothing imports this package."""
