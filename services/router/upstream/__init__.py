"""The router's calls to its model services: admission, replicas, retries, ejection, holds for scale from zero."""
