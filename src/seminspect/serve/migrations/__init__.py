"""Alembic migrations of the review database (applied by ``seminspect serve`` and ``seminspect review migrate``)."""
