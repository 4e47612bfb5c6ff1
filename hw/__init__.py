"""Streaming Amaranth components; never imports torch (issue #3)."""

__all__: list[str] = []
