"""LiteLLM, from the wrapper's side: the client, the forward of a request and its answer, SSE, stream usage."""
