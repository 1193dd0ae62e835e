"""Process wiring: configuration, the Temporal client, HTTP servers and the embedded dev stack."""
