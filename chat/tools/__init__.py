"""Command-line helpers: ``python -m chat.tools.<name>``."""
