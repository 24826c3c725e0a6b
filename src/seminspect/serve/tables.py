"""The review database's schema (SQLAlchemy 2): sites, views, model versions, decisions, tasks, reviewers, actions.

Times are naive UTC (:func:`utcnow`) so SQLite and PostgreSQL return the same values. The schema is
created and changed only by the Alembic migrations in ``serve/migrations``; keep the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """An artefact that made decisions: its content id and taxonomy (so an export can name it)."""

    __tablename__ = "model_versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    taxonomy_name: Mapped[str] = mapped_column(String(200))
    taxonomy: Mapped[dict[str, Any]] = mapped_column(JSON)
    artefact: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Site(Base):
    """One judged site; ``meta`` holds lot, wafer, tool, product, ... as strings."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[str] = mapped_column(String(300), index=True)
    source: Mapped[str] = mapped_column(String(20))  # upload | path | predict
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    views: Mapped[list[SiteView]] = relationship(back_populates="site", order_by="SiteView.id")
    decision: Mapped[Decision | None] = relationship(back_populates="site", uselist=False)


class SiteView(Base):
    __tablename__ = "views"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    view_index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    bits: Mapped[int] = mapped_column(Integer)
    site: Mapped[Site] = relationship(back_populates="views")


class Decision(Base):
    """The inspector's decision row (``payload``: the documented columns) with the queried ones pulled out."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), unique=True)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    route: Mapped[str] = mapped_column(String(20), index=True)
    abnormal_prob: Mapped[float] = mapped_column(Float)
    type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    top1_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    top1_prob: Mapped[float | None] = mapped_column(Float, nullable=True)
    anomaly_flag: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    site: Mapped[Site] = relationship(back_populates="decision")


class Reviewer(Base):
    __tablename__ = "reviewers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReviewTask(Base):
    """A site routed to review. ``label``: ``normal`` or a leaf type once judged; a claim expires."""

    __tablename__ = "review_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), unique=True)
    priority: Mapped[float] = mapped_column(Float, index=True)  # lower first
    status: Mapped[str] = mapped_column(String(10), default="open", index=True)  # open | done
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id"), nullable=True)
    claim_expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id"), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    site: Mapped[Site] = relationship()


class ReviewerAction(Base):
    """The audit trail: who did what to which task when, and the value it replaced."""

    __tablename__ = "reviewer_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(20))  # label | undo
    value: Mapped[str | None] = mapped_column(String(200), nullable=True)
    previous: Mapped[str | None] = mapped_column(String(200), nullable=True)
    undone: Mapped[bool] = mapped_column(Boolean, default=False)
