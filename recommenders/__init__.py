"""Recommenders facing the simulated users, behind one protocol (`simenv.protocols.Recommender`) and a
name registry: `recommenders.registry.make("mf", dim=64)`.

Modules: `base` (shared parts), `random_policy`, `popularity`, `mf`, `multvae`, `lightgcn`, `sasrec`,
`llm_ranker`, `training` (shared loop, BPR), `evaluation` (Recall/NDCG@k), `registry`.
"""
