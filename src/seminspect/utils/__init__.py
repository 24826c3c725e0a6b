"""Small shared helpers: atomic writes, seeding, progress bars."""
