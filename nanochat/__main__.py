"""``python -m nanochat`` runs the CLI."""

from nanochat.core.cli import main

if __name__ == "__main__":
    main()
