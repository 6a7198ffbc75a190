"""Sockets, frames in and out, delivery across processes, presence."""
