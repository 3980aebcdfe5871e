"""Photo upload: seeded candidates sign in and upload their registration photo, as on the day registration opens.

Each user draws its own photo when it starts (``loadtest.photos``: a camera-like JPEG of 1–2 MP,
a different picture per user), on gevent's thread pool so that the drawing, mostly Pillow's C code
with the GIL released, does not stall the other users' requests. Then, per iteration, the next
seeded candidate signs in, uploads it once (``PUT /api/v1/me/photo``), reads the current photo as
the page does after an upload (``GET /api/v1/me/photo``) and opens its signed link, and signs out.

An approved photo is locked at once: a candidate reached again (a later run, or this run wrapping
round the window) is refused ``409 photo_locked``, an expected refusal. A full image pool answers
``503 overloaded`` with ``Retry-After``: the user waits as long as it says (not the 2 s cap of the
other steps: a rehearsal's retries must not come back sooner than a candidate's page would) plus a
little jitter, so the refused uploads do not return in one wave, and tries again, up to
``UPLOAD_ATTEMPTS`` times and never past the run's end.
"""

from __future__ import annotations

import random
from typing import Any

import gevent
from locust import task
from locust.env import Environment

from loadtest.locust_hooks import seconds_left
from loadtest.photos import portrait_jpeg
from loadtest.users.base import Answer, ExamgateUser
from seed.photos import has_photo

PHOTO = "/api/v1/me/photo"
UPLOADED_FIELDS = ("photo_id", "status", "width", "height", "bytes")
CURRENT_FIELDS = ("photo_id", "status", "url", "uploaded_at")
UPLOAD_ATTEMPTS = 4  # the first try and three after the Retry-After of a full pool
RETRY_JITTER_S = 0.5
LOCKED = "photo_locked"


def _normalised(_: Any, body: Any) -> str | None:
    if body.get("status") not in ("approved", "needs_review"):
        return f"status {body.get('status')!r}"
    if (body.get("width"), body.get("height")) != (295, 413):
        return f"normalised to {body.get('width')} × {body.get('height')}, not 295 × 413"
    return None


def _is_jpeg(resp: Any, _: Any) -> str | None:
    content_type = (resp.headers or {}).get("Content-Type", "")
    if not content_type.startswith("image/jpeg") or not (resp.content or b"").startswith(b"\xff\xd8\xff"):
        return f"not a JPEG ({content_type or 'no content type'})"
    return None


class PhotoUploadUser(ExamgateUser):
    """A candidate uploading the registration photo the day registration opens."""

    weight = 2

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.photo = b""

    def wants(self, index: int) -> bool:
        """A candidate who has not uploaded a photo yet (one seeded candidate in four)."""
        return not has_photo(index)

    def on_start(self) -> None:
        """Draw this user's photo (off the gevent hub: other users keep sending meanwhile)."""
        seed = random.getrandbits(48)
        self.photo = gevent.get_hub().threadpool.apply(portrait_jpeg, (seed,))

    @task
    def upload_photo(self) -> None:
        """The next candidate: sign in, upload, see the photo, sign out."""
        if not self.sign_in():
            return
        uploaded = self.upload()
        if uploaded is not None and (uploaded.due or (uploaded.refused and uploaded.refused.reason == LOCKED)):
            self.think()
            self.see_current(uploaded)
        self.think()
        self.sign_out()

    def upload(self) -> Answer | None:
        """``PUT /api/v1/me/photo``, again after a full pool's Retry-After; the last answer (None: no time left)."""
        answer: Answer | None = None
        for attempt in range(UPLOAD_ATTEMPTS):
            answer = self.call("PUT", PHOTO, name=PHOTO, due=(201,), fields=UPLOADED_FIELDS, check=_normalised,
                               data=self.photo, tolerated=(LOCKED,), retries=0,
                               headers=self.headers(captcha=True, extra={"Content-Type": "image/jpeg"}))
            refused = answer.refused
            if answer.due or refused is None or refused.reason == LOCKED or attempt == UPLOAD_ATTEMPTS - 1:
                return answer
            wait_s = refused.retry_after_s + random.uniform(0, RETRY_JITTER_S)
            left = seconds_left(self.knobs.duration_s)
            if left is not None and left < wait_s:
                return answer  # the run ends first: the refusal stands
            gevent.sleep(wait_s)
        return answer

    def see_current(self, uploaded: Answer) -> None:
        """The page after an upload: the current photo (the one just uploaded, unless refused) and its JPEG."""
        photo_id = uploaded.body.get("photo_id") if uploaded.due else None

        def this_photo(_: Any, body: Any) -> str | None:
            if photo_id is not None and body.get("photo_id") != photo_id:
                return f"current photo {body.get('photo_id')}, not the one uploaded ({photo_id})"
            return None

        current = self.call("GET", PHOTO, name=PHOTO, fields=CURRENT_FIELDS, check=this_photo,
                            headers=self.headers())
        if not current.due:
            return
        self.call("GET", str(current.body["url"]), name="/api/v1/photos/{photo_id}.jpg", check=_is_jpeg,
                  headers=self.headers())

