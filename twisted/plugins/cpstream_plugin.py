from twisted.application.service import ServiceMaker

cpstream = ServiceMaker(
    "cpstream",
    "cpstream.tap",
    "A control plane for local agent processes, with live WebSocket streams.",
    "cpstream",
)
