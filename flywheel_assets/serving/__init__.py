"""Serving the student with Triton: client, rollout / rollback, gate, production configs."""
