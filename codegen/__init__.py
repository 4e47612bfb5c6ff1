"""Integer IR, golden reference executor, folding planner and emitter (issue #4)."""

__all__: list[str] = []
