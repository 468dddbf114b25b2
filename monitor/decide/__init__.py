"""Decide stage: per-instance health and per-pool scaling, pure functions over plain data."""
