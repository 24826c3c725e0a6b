"""The inspection service and the human review loop (optional extra ``seminspect[serve]``).

A reader's map: ``config`` (limits and paths), ``tables`` (the SQLAlchemy schema), ``database``
(engine, sessions, Alembic migrations shipped in ``migrations/``), ``uploads`` (a request's views to a
:class:`~seminspect.data.sample.Sample`, every problem a :class:`~seminspect.serve.errors.RequestError`),
``store`` (site + views + decision + review task in one transaction), ``api`` (``/v1`` routes),
``auth`` (argon2 passwords, signed session cookies), ``queue`` (review tasks: priority, claims,
decisions, undo), ``review_pages`` and ``review_images`` (the review web page and its pictures),
``export`` (reviewed sites as a dataset), ``ingest`` (a ``predict`` run into the same tables), ``stats``
and ``app`` (the FastAPI application). Decisions come from
:class:`seminspect.inference.Inspector`, the one inference path; nothing in the core package imports
this one.
"""
