"""Suite-wide settings: everything runs offline; area fixtures live in tests/fixtures_<area>.py."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads spin-wait by default; under load that multiplies torch and llama.cpp CPU time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
