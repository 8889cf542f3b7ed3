"""Persistence: engine, types, tables and the unit of work."""
