"""Recommenders facing the simulated users, behind one protocol and a name registry."""
