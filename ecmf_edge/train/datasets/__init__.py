"""Adapters that read labeled corpora from a local folder and map their labels explicitly."""
