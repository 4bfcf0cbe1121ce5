"""The Wyoming protocol (Home Assistant's voice assistants) served by ``harmony serve --wyoming-port``: a thin
adapter that is a client of the router's own API (docs/home-assistant.md)."""
