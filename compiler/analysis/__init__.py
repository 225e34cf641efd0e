"""Analyses over the graph IR that read a graph and report on it without changing it."""

from .summary import ModelSummary, format_summary, summarize

__all__ = ["ModelSummary", "format_summary", "summarize"]
