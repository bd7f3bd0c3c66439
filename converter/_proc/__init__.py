"""Child processes: :mod:`.children` (every child dies with its parent) and :mod:`.isolated` (the TFLite runner,
whose native aborts must not take the conversion with them)."""
