"""Scan a folder, decode and embed its images, and write them to a collection."""

from vtsearch.indexer.pipeline import IndexReport, index_folder
from vtsearch.indexer.scan import FileStat, Plan, plan_changes, scan_folder

__all__ = ["FileStat", "IndexReport", "Plan", "index_folder", "plan_changes", "scan_folder"]
