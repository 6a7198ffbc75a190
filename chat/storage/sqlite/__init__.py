"""The embedded backend: one SQLite file, for ``make run`` on a bare machine.

One module per repository (users, sessions, rooms, memberships, mentions,
bans, moderation, messages) over one :mod:`.database`; :mod:`.storage`
puts them together; :mod:`.url` checks and opens ``sqlite:///PATH``.

SQLite allows one writer at a time, so all writes go through one connection
behind an asyncio lock, each in an explicit ``BEGIN IMMEDIATE`` transaction.
Reads use a second connection: in WAL mode it sees only committed data and
never waits for the writer. ``synchronous=FULL`` makes a commit durable before
``add`` returns, which is what lets the caller acknowledge a message.

One SQLite file belongs to one chat process; the multi-process group uses
MongoDB.
"""
