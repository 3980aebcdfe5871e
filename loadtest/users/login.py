"""Login storm: sign in, read the profile, sign out; again as the next candidate."""

from __future__ import annotations

from typing import Any

from locust import task

from loadtest.users.base import ExamgateUser
from seed import candidate_credentials

PROFILE_FIELDS = ("candidate_id", "username", "name", "id_type", "id_number", "phone", "email")


class LoginUser(ExamgateUser):
    """A candidate signing in the minute a peak starts."""

    weight = 3

    @task
    def sign_in_and_out(self) -> None:
        """Sign in, read the profile, sign out."""
        if not self.sign_in():
            return
        assert self.index is not None
        username = candidate_credentials(self.index).username

        def own_profile(_: Any, body: Any) -> str | None:
            return None if body.get("username") == username else f"another candidate's profile ({body.get('username')})"

        self.think()
        self.call("GET", "/api/v1/me", name="/api/v1/me", fields=PROFILE_FIELDS, check=own_profile,
                  headers=self.headers())
        self.think()
        self.sign_out()
