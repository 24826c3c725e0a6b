"""The first schema: sites, views, model versions, decisions, reviewers, review tasks, reviewer actions."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions", sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("taxonomy_name", sa.String(200), nullable=False), sa.Column("taxonomy", sa.JSON, nullable=False),
        sa.Column("artefact", sa.Text, nullable=False), sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table(
        "sites", sa.Column("id", sa.Integer, primary_key=True), sa.Column("sample_id", sa.String(300), nullable=False),
        sa.Column("source", sa.String(20), nullable=False), sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_index("ix_sites_sample_id", "sites", ["sample_id"])
    op.create_table(
        "views", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(20), nullable=False), sa.Column("view_index", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False), sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("height", sa.Integer, nullable=False), sa.Column("width", sa.Integer, nullable=False),
        sa.Column("bits", sa.Integer, nullable=False))
    op.create_index("ix_views_site_id", "views", ["site_id"])
    op.create_table(
        "decisions", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("model_version", sa.String(64), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("route", sa.String(20), nullable=False), sa.Column("abnormal_prob", sa.Float, nullable=False),
        sa.Column("type", sa.String(200)), sa.Column("top1_type", sa.String(200)), sa.Column("top1_prob", sa.Float),
        sa.Column("anomaly_flag", sa.Boolean), sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_index("ix_decisions_route", "decisions", ["route"])
    op.create_table(
        "reviewers", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False), sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table(
        "review_tasks", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("priority", sa.Float, nullable=False), sa.Column("status", sa.String(10), nullable=False),
        sa.Column("label", sa.String(200)), sa.Column("claimed_by", sa.Integer, sa.ForeignKey("reviewers.id")),
        sa.Column("claim_expires", sa.DateTime), sa.Column("reviewed_by", sa.Integer, sa.ForeignKey("reviewers.id")),
        sa.Column("reviewed_at", sa.DateTime))
    op.create_index("ix_review_tasks_priority", "review_tasks", ["priority"])
    op.create_index("ix_review_tasks_status", "review_tasks", ["status"])
    op.create_table(
        "reviewer_actions", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("review_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("reviewers.id"), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False), sa.Column("action", sa.String(20), nullable=False),
        sa.Column("value", sa.String(200)), sa.Column("previous", sa.String(200)),
        sa.Column("undone", sa.Boolean, nullable=False))
    op.create_index("ix_reviewer_actions_task_id", "reviewer_actions", ["task_id"])


def downgrade() -> None:
    for name in ("reviewer_actions", "review_tasks", "reviewers", "decisions", "views", "sites", "model_versions"):
        op.drop_table(name)
