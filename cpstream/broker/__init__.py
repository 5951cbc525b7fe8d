"""The Redis broker: the control plane's publisher and the gateways' feed (txredisapi)."""
