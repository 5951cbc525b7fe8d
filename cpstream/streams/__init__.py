"""The WebSocket streams: protocol options, connection bookkeeping, and the protocols.

Streams turn the domain's output (hub frames, log lines) into WebSocket
frames. They import the domain and Autobahn, never the web layer; the ``/ws/``
resource tree that mounts them lives in :mod:`cpstream.web.streams`.
"""
