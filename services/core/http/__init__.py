"""The engine's HTTP stack: servers, the router's client to its services, uploads, draining, the generic model
service."""
