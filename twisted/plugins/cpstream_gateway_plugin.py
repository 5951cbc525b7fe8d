from twisted.application.service import ServiceMaker

cpstream_gateway = ServiceMaker(
    "cpstream-gateway",
    "cpstream.gatewaytap",
    "A stream gateway: the control plane's WebSocket streams, fed by Redis.",
    "cpstream-gateway",
)
