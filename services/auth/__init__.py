"""API keys, per-key limits and quotas, and the audit trail of the router."""
