"""Reviewer accounts (argon2-hashed passwords) and signed session cookies (HMAC-SHA256, with expiry)."""

from __future__ import annotations

import hashlib
import hmac
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from seminspect.serve.tables import Reviewer

COOKIE = "seminspect_session"
_hasher = PasswordHasher()


def add_user(session: Session, name: str, password: str) -> Reviewer:
    """Create a reviewer, or set a new password for an existing one."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("reviewer name must be 1..100 characters")
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    user = session.scalar(select(Reviewer).where(Reviewer.name == name))
    if user is None:
        user = Reviewer(name=name, password_hash=_hasher.hash(password))
        session.add(user)
    else:
        user.password_hash = _hasher.hash(password)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> Reviewer | None:
    user = session.scalar(select(Reviewer).where(Reviewer.name == name.strip()))
    if user is None:
        _hasher.hash(password)  # the same work whether or not the name exists
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def _sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def make_cookie(secret: str, reviewer_id: int, hours: float = 12.0) -> str:
    payload = f"{reviewer_id}.{int(time.time() + hours * 3600)}"
    return f"{payload}.{_sign(secret, payload)}"


def read_cookie(secret: str, value: str | None) -> int | None:
    """The reviewer id of a valid, unexpired cookie, else None."""
    if not value or value.count(".") != 2:
        return None
    rid, expires, sig = value.split(".")
    if not hmac.compare_digest(sig, _sign(secret, f"{rid}.{expires}")):
        return None
    if not (rid.isdigit() and expires.isdigit()) or int(expires) < time.time():
        return None
    return int(rid)
