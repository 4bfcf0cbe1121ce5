"""The web playground: a static page (no build step, no CDN) served by the router at ``/``."""
