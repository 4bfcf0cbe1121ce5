"""The public OpenAI-compatible API: validation, routing, load balancing and pipelines."""
