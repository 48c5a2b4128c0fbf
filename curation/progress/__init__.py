"""What the user sees while a run goes and after: the live display and `curate status`."""
