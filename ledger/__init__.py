"""The ledger: the long-term record of mailings, recipients, messages and reports (SQLite or PostgreSQL).

Temporal orchestrates and forgets closed workflows after its retention; the ledger keeps what happened, and
every report, `status` of a finished mailing, `list` and `search` reads it. It never decides what to send.
"""
