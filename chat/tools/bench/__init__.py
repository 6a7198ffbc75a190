"""The fan-out benchmark: ``python -m chat.tools.bench`` (see ``__main__``)."""
