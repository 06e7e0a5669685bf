"""The archive index in PostgreSQL (``[index] backend = "postgres"``): :class:`PgIndex`.

Imported only when configured: psycopg (the ``duckpacs[postgres]`` extra) is not needed by
the embedded index.
"""
