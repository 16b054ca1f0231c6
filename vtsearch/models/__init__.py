"""Embedding backends (bi-encoders) and, later, the fusion re-ranker."""
