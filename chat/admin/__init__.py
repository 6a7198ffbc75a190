"""The site administrator's command line: ``python -m chat.admin --help``.

It reads the server's settings (environment, then ``.env``), opens the same
database and broker, and acts through the same services
(:mod:`chat.services.operations.administration`), so running servers see its changes
the way they see a change made through the site.
"""
