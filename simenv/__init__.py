"""simenv: the core of simrec — records, data, the LLM layer and the Gymnasium environment."""
