"""The distributed backend: MongoDB through PyMongo's async API.

One module per repository over one client (:mod:`.storage`, which also
makes the indexes); :mod:`.documents` maps documents; :mod:`.url` checks
and opens ``mongodb://`` URLs.

Uses only what both MongoDB and FerretDB v1 support (the tests run against
FerretDB): no transactions, change streams or TTL indexes. A message's seq
follows the highest one known to be stored and is written under the unique
``(room_id, seq)`` index (see :meth:`MongoMessages._insert_next`), so seqs
have no holes and never appear out of order, on MongoDB and FerretDB alike.

An ack is only sent once the write is acknowledged with the write concern
``w=majority, journal=true`` (unless the URL sets its own; see README).
"""
