"""Rooms, who is in them and with which role, moderation, and read markers."""
