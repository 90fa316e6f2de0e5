"""The deterministic cluster simulator: world.py (the simulated cluster), checks.py
(its invariants), runner.py (seeds, worker pools, the command line)."""
