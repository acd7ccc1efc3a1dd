"""Deployment only moves forward: may a cycle's adapter replace the model serving now?

Serving moves backwards only through `flywheel rollback`. A re-materialized (backfilled) old
cycle re-evaluates, but never replaces the deployment of a newer cycle; after a rollback, the
rolled-back cycle does not come back by itself either: a newer cycle, or another rollback, moves
serving on.
"""

from __future__ import annotations


def refuse_reason(cycle: str, seq: int, newest: dict | None, serving: dict | None) -> str | None:
    """Why cycle `cycle` (position `seq`) must not deploy; None when it may.

    `newest`: the deploy of the newest cycle ever deployed (`cycle`, `seq`, `model_version`);
    `serving`: the latest deployment event (`deployed_in`, `model_version`, `action`).
    """
    if newest is None:
        return None
    if seq < newest["seq"]:
        return (
            f"not deployed: a newer cycle serves ({newest['cycle']}, "
            f"v{newest['model_version']} was deployed after it); only `flywheel rollback` "
            "moves serving back"
        )
    if seq == newest["seq"] and serving is not None and serving["action"] == "rollback":
        return (
            f"not deployed: serving was rolled back to v{serving['model_version']} "
            f"({serving['deployed_in']}) after cycle {cycle} was deployed; a newer cycle or "
            "`flywheel rollback` moves it"
        )
    return None
