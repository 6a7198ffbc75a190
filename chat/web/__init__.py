"""The Tornado edge: request handlers, the WebSocket handler and session cookies."""
