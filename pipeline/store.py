"""Server-side array store shared by every worker process.

The browser only ever holds a session id and an image id. The arrays behind them live here,
in a :class:`diskcache.Cache` on disk: several gunicorn workers (and several machines sharing a
volume) see the same store, so a session works whichever worker answers. Entries are keyed by
session id *and* content hash, so one user can never read another user's image, even when both
loaded the same file. Least recently used entries are evicted past the size limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import diskcache
import numpy as np

from .errors import InputError

__all__ = ["ArrayStore", "new_session_id", "check_session_id"]

_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_IMAGE_RE = re.compile(r"^[0-9a-f]{8,64}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{24}$")  # a stored recipe's hash (blake2b, 12 bytes)


def new_session_id() -> str:
    """Return a new random session id (128 random bits, hex)."""
    return uuid.uuid4().hex


def check_session_id(session_id) -> str:
    """Check that `session_id` looks like one made by :func:`new_session_id`.

    Raises
    ------
    InputError
        If it does not (the page is stale or the request was forged).
    """
    if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
        raise InputError("session_id is missing or malformed: reload the page to start a new session.")
    return session_id


def _check_image_id(image_id) -> str:
    if not isinstance(image_id, str) or not _IMAGE_RE.match(image_id):
        raise InputError("image_id is missing or malformed: load an image first.")
    return image_id


class ArrayStore:
    """Arrays and small records of each session, on disk, shared by all workers.

    Parameters
    ----------
    directory : str or Path
        Folder of the store; created if missing.
    size_limit : int
        Size limit in bytes; least recently used entries are evicted beyond it.
    """

    def __init__(self, directory, size_limit: int = 4 * 1024**3):
        if size_limit <= 0:
            raise InputError(f"size_limit must be positive, got {size_limit}")
        self.directory = Path(directory)
        self._cache = diskcache.Cache(
            str(self.directory),
            size_limit=int(size_limit),
            eviction_policy="least-recently-used",
            # Large arrays go to files of their own, small records stay in SQLite.
            disk_min_file_size=2**16,
        )

    def close(self):
        """Close the underlying database handles."""
        self._cache.close()

    @staticmethod
    def _key(session_id, image_id, name):
        return f"{check_session_id(session_id)}/{_check_image_id(image_id)}/{name}"

    def put_image(self, session_id: str, image_id: str, array: np.ndarray, meta: dict) -> None:
        """Store an image and its metadata for one session.

        Parameters
        ----------
        session_id : str
            The session that loaded the image.
        image_id : str
            Content hash of `array` (:func:`pipeline.io.content_hash`).
        array : ndarray
            The validated image.
        meta : dict
            Small JSON-able description (name, shape, dtype, notes...).
        """
        array = np.ascontiguousarray(array)
        array.setflags(write=False)
        self._cache.set(self._key(session_id, image_id, "array"), array)
        self._cache.set(self._key(session_id, image_id, "meta"), dict(meta))

    def has_image(self, session_id: str, image_id: str) -> bool:
        """Whether this session holds this image."""
        return self._key(session_id, image_id, "array") in self._cache

    def get_image(self, session_id: str, image_id: str) -> np.ndarray:
        """Return an image of this session.

        Raises
        ------
        InputError
            If the session does not hold it (never loaded, or evicted).
        """
        array = self._cache.get(self._key(session_id, image_id, "array"))
        if array is None:
            raise InputError(
                "This image is no longer on the server (expired or evicted). Load it again."
            )
        return array

    def get_meta(self, session_id: str, image_id: str) -> dict:
        """Return the metadata stored with an image (empty dict if absent)."""
        return self._cache.get(self._key(session_id, image_id, "meta")) or {}

    def put(self, session_id: str, image_id: str, name: str, value) -> None:
        """Store any picklable value under (session, image, name)."""
        self._cache.set(self._key(session_id, image_id, name), value)

    def get(self, session_id: str, image_id: str, name: str, default=None):
        """Read a value stored with :meth:`put`."""
        return self._cache.get(self._key(session_id, image_id, name), default)

    def put_recipe(self, session_id: str, image_id: str, recipe: dict) -> None:
        """Remember the current recipe of a session's image (for notebooks and batch runs)."""
        self.put(session_id, image_id, "recipe", recipe)
        self._cache.set(f"latest-recipe/{_check_image_id(image_id)}", recipe)

    def latest_recipe(self, image_id: str):
        """The recipe most recently set on this image by any session, or None."""
        return self._cache.get(f"latest-recipe/{_check_image_id(image_id)}")

    # --- undo history (kept here, not in the browser: a move sends no history) ---------------

    def put_history(self, session_id: str, image_id: str, states, index: int) -> str:
        """Store one version of a session's undo history of an image; return its revision.

        Versions are immutable: a request that pushes a state writes a new version and hands
        its revision to the browser, so two requests racing on the same version can never
        corrupt each other (the browser keeps the one it applied last). Recipes are stored
        once each, by content, and a version is the list of their hashes: a version of a
        500-state history is ~9 kB, whatever the recipes.

        Parameters
        ----------
        session_id, image_id : str
        states : sequence of dict or str
            The recipes of the history, oldest first; a str is the hash of a recipe stored
            already (as :meth:`get_history` gives them with ``current_only=True``), so that a
            push costs the same whatever the history's length.
        index : int
            Position of the current recipe in `states`.
        """
        if not 0 <= index < len(states):
            raise InputError(f"index {index} is outside the history (0..{len(states) - 1})")
        hashes = []
        for recipe in states:
            if isinstance(recipe, str):
                if not _DIGEST_RE.match(recipe):
                    raise InputError("a history state must be a recipe or a stored hash")
                hashes.append(recipe)
                continue
            text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
            digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
            key = self._key(session_id, image_id, f"recipe/{digest}")
            if key not in self._cache:
                self._cache.set(key, text)
            hashes.append(digest)
        rev = uuid.uuid4().hex
        self.put(session_id, image_id, f"history/{rev}", {"states": hashes, "index": int(index)})
        return rev

    def get_history(self, session_id: str, image_id: str, rev: str, *, states=True,
                    current_only=False):
        """A version of the undo history: ``{"image_id", "states", "index", "rev"}``.

        With ``states=False`` the recipes are not read (``"states"`` holds their hashes); with
        ``current_only=True`` only the current one is (the others stay hashes: read them with
        :meth:`get_recipe` when needed), so reading a version costs the same at any length.

        Raises
        ------
        InputError
            If the version is unknown (evicted, or the revision was forged).
        """
        if not isinstance(rev, str) or not re.fullmatch(r"[0-9a-f]{32}", rev):
            raise InputError("history revision is missing or malformed: reload the page.")
        record = self.get(session_id, image_id, f"history/{rev}")
        if record is None:
            raise InputError("This image's undo history is no longer on the server. "
                             "Load the image again.")
        hashes = list(record["states"])
        if current_only:
            i = record["index"]
            hashes[i] = self.get_recipe(session_id, image_id, hashes[i])
        elif states:
            hashes = [self.get_recipe(session_id, image_id, digest) for digest in hashes]
        return {"image_id": image_id, "states": hashes, "index": record["index"], "rev": rev}

    def get_recipe(self, session_id: str, image_id: str, digest: str) -> dict:
        """A recipe of the session's histories by its hash (InputError if it is gone)."""
        text = self.get(session_id, image_id, f"recipe/{digest}")
        if text is None:
            raise InputError("This image's undo history is no longer on the server. "
                             "Load the image again.")
        return json.loads(text)

    # --- what the session shows now (responses for a state the user has left are dropped) -

    def set_current(self, session_id: str, image_id: str, rev=None) -> None:
        """Record the image (and history revision) the session's page shows now."""
        self._cache.set(f"{check_session_id(session_id)}/current",
                        {"image_id": _check_image_id(image_id), "rev": rev})

    def is_current(self, session_id: str, image_id: str, rev=None) -> bool:
        """Whether the session still shows this image (and this revision, if given).

        True when nothing is recorded yet (a session that never loaded through the app)."""
        found = self._cache.get(f"{check_session_id(session_id)}/current")
        if found is None:
            return True
        if found["image_id"] != image_id:
            return False
        return rev is None or found["rev"] is None or found["rev"] == rev

    def bump(self, session_id: str, name: str, seq: int) -> bool:
        """Record request number `seq` of a stream `name` (e.g. the drag previews); return
        False if a later one was recorded already (this request is superseded)."""
        key = f"{check_session_id(session_id)}/seq/{name}"
        with self._cache.transact():
            latest = self._cache.get(key, -1)
            if seq < latest:
                return False
            self._cache.set(key, int(seq))
        return True

    def latest(self, session_id: str, name: str) -> int:
        """The latest request number recorded by :meth:`bump` (-1 if none)."""
        return self._cache.get(f"{check_session_id(session_id)}/seq/{name}", -1)

    def volume(self) -> int:
        """Bytes used on disk."""
        return self._cache.volume()
