"""Widgets shared by the pages: a job's progress panel (progress.py) and a run's result (result.py)."""
