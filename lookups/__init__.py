"""Ticket and score lookups: records, prewarm, caching, the ticket PDF and its signed link."""
