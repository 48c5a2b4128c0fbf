"""Runs the stage DAG on Ray: the run folder, the jobs of each stage kind, placement."""
