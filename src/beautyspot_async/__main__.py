"""``python -m beautyspot_async`` runs the command-line interface."""

from .cli import main

main()
