"""An example of a user's own store under test: a tiny primary-backup store (server.py) and its
kvcheck adapter (adapter.py). See examples/README.md and docs/your-store.md."""
