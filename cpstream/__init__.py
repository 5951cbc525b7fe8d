"""cpstream: a control plane for local agent processes, with live WebSocket streams."""

__version__ = "0.1.0"
