"""How ``python -m chat.admin`` exits: one status per kind of outcome."""

EXIT_OK = 0
EXIT_INVALID = 1  # bad usage, bad input, a configuration error
EXIT_NOT_FOUND = 2  # no such user, room, session or file
EXIT_UNAVAILABLE = 3  # the database (or the broker it must reach) does not answer
EXIT_CONFLICT = 4  # it exists already, or clashes with what is there
EXIT_INTERRUPTED = 130
