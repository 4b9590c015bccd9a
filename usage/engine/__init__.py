"""The mediation engine: the gates computed in DuckDB inside the worker (docs/architecture.md).

The store (PostgreSQL or SQLite) is the system of record; the engine reads from it the reference
data a file can reach, computes the gates over narrow DuckDB tables, and hands the outcome back to
`usage.store` to be written. Both storage backends get the same answers because one engine computes
them.
"""
