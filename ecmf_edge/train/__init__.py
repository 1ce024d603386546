"""Training: datasets, the branches, the fusion head, label refinement and metrics (needs the ``train`` extra)."""
