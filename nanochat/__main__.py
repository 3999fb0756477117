"""``python -m nanochat`` runs the CLI."""

from nanochat.core.cli import main

main()
