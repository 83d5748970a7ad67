"""Step 5 of the flow: which model serves a request."""
