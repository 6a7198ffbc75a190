"""chat: a distributed, real-time chat server built on Tornado."""

__version__ = "0.1.0"
