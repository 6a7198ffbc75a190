"""Messages: storing, revising and rendering them (later: replies, threads, reactions, pins, search)."""
