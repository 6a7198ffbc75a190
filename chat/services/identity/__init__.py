"""People, their passwords and their sessions (later: e-mail, reset, two-step sign-in, devices)."""
