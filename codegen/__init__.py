"""Integer IR, golden reference executor, folding planner and emitter."""

__all__: list[str] = []
