"""Embedding backends (bi-encoders), the fusion re-ranker, and their training."""
