"""Offline HTML dashboards rendered from the job's Delta tables (images, faces, campaigns, runs).

Public API: :func:`render_dashboards` (also ``python -m dashboards render``).
Imports are lazy so ``import dashboards`` stays cheap for the job.
"""
from __future__ import annotations

from typing import Any

__all__ = ["render_dashboards", "DashboardError"]


def __getattr__(name: str) -> Any:
    if name == "render_dashboards":
        from dashboards.render import render_dashboards

        return render_dashboards
    if name == "DashboardError":
        from dashboards.tables import DashboardError

        return DashboardError
    raise AttributeError(f"module 'dashboards' has no attribute {name!r}")
