"""What outlives a run: members' tokens, the webhook inbox and the ledger; files or PostgreSQL."""
