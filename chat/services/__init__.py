"""The rules of the chat, independent of Tornado and of any database driver."""
