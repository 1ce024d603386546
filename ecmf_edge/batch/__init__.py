"""Labelling recorded sessions: timelines, summaries and plots of files and folders, locally or on Ray."""
