"""The domain: instances, their children and logs, messaging, and the fan-out hub.

Nothing here speaks HTTP or WebSocket: no Klein, Autobahn, treq or status
codes. Failures are the exceptions of :mod:`cpstream.domain.errors`; the web
layer maps them to statuses in one table.
"""
