"""The webhook gateway: verify a provider's delivery report, map it to its workflow, signal it."""
