"""The cache layers: exact and template (step 6 of the flow)."""
