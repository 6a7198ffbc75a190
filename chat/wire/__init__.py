"""The wire: everything that crosses a socket or the broker, each thing defined once.

``docs/protocol.md`` is the human-readable contract; these modules are the
executable one:

* :mod:`~chat.wire.client`: the frames a client sends, each declared once
  (fields, reader, limits, handler);
* :mod:`~chat.wire.server`: one builder per frame the server sends;
* :mod:`~chat.wire.events`: what processes tell each other on the broker;
* :mod:`~chat.wire.refusals`: close codes, error codes, and the one table
  from exceptions to answers (HTTP status and error frame);
* :mod:`~chat.wire.actions`: what the abuse limits count;
* :mod:`~chat.wire.text`: checks of text and numbers a client sends, and the
  username rule.
"""
