"""Rate limiting: GCRA rules decided together in one Redis round trip."""
