"""Simulated users: Agent4Rec-style personas, memory, reflection, page decisions, interview, fast user."""
