"""What a site administrator does (python -m chat.admin): accounts, sessions, rooms, counts."""
