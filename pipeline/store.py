"""Server-side array store shared by every worker process.

The browser only ever holds a session id and an image id. The arrays behind them live here,
in a :class:`diskcache.Cache` on disk: several gunicorn workers (and several machines sharing a
volume) see the same store, so a session works whichever worker answers. Entries are keyed by
session id *and* content hash, so one user can never read another user's image, even when both
loaded the same file.

Images are accounted per *owner* (a signed-in user, or the session in local mode): an owner's
images never exceed its quota (its own oldest are removed first to make room), and an upload
never removes another owner's current image (see :meth:`ArrayStore.put_image`). Past the size
limit diskcache still evicts the least recently used entries (small records, mostly).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
import uuid
from pathlib import Path

import diskcache
import numpy as np
from numpy.lib import format as npformat

from .errors import InputError
from .npyfile import map_npy

__all__ = ["ArrayStore", "check_session_id", "new_session_id", "session_belongs_to"]

_SESSION_RE = re.compile(r"^[0-9a-f]{32}$")
_IMAGE_RE = re.compile(r"^[0-9a-f]{8,64}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{24}$")  # a stored recipe's hash (blake2b, 12 bytes)


class _NpyReader:
    """A file-like reader of `array` in ``.npy`` format, served in chunks straight from the
    array's memory: diskcache (``set(..., read=True)``) streams it to a file without a
    pickled copy of the whole array."""

    def __init__(self, array: np.ndarray):
        header = io.BytesIO()
        npformat.write_array_header_2_0(header, npformat.header_data_from_array_1_0(array))
        self._parts = [memoryview(header.getvalue()), memoryview(array).cast("B")]
        self._part = self._pos = 0

    def read(self, size: int = -1) -> bytes:
        while self._part < len(self._parts):
            part = self._parts[self._part]
            if self._pos < len(part):
                end = len(part) if size is None or size < 0 else self._pos + size
                out = bytes(part[self._pos:end])
                self._pos += len(out)
                return out
            self._part, self._pos = self._part + 1, 0
        return b""


def _session_mac(nonce: str, user: str, secret) -> str:
    if not secret:
        raise InputError("secret must be given to bind a session id to a user")
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hmac.new(key, f"{user}\0{nonce}".encode(), hashlib.sha256).hexdigest()[:16]


def new_session_id(user: str | None = None, secret=None) -> str:
    """Return a new session id: 32 hex digits.

    Parameters
    ----------
    user : str, optional
        The signed-in user the session belongs to. Without it the id is 128 random bits
        (local mode); with it, 64 random bits followed by a 64-bit HMAC of the user and those
        bits under `secret`, so that :func:`session_belongs_to` can tell, without any record,
        whether a request's session id was issued to its user.
    secret : str or bytes, optional
        The server's secret key (required with `user`).
    """
    if user is None:
        return uuid.uuid4().hex
    nonce = uuid.uuid4().hex[:16]
    return nonce + _session_mac(nonce, str(user), secret)


def session_belongs_to(session_id, user: str, secret) -> bool:
    """Whether `session_id` was issued to `user` by :func:`new_session_id` under `secret`."""
    if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
        return False
    return hmac.compare_digest(session_id[16:], _session_mac(session_id[:16], str(user), secret))


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
        Size limit in bytes; least recently used entries are evicted beyond it. Images may
        use 80 % of it (the rest is for histories and other small records).
    quota : int, optional
        Bytes of images one owner may hold (default: a quarter of `size_limit`).
    protect_s : float
        An image another owner's session showed within this many seconds is never removed
        to make room for an upload (default one hour).
    """

    #: Key of the record of who holds which image (see :meth:`put_image`).
    LEDGER = "quota/ledger"

    def __init__(self, directory, size_limit: int = 4 * 1024**3, quota: int | None = None,
                 protect_s: float = 3600.0):
        if size_limit <= 0:
            raise InputError(f"size_limit must be positive, got {size_limit}")
        quota = int(size_limit // 4) if quota is None else int(quota)
        if quota <= 0:
            raise InputError(f"quota must be positive, got {quota}")
        self.directory = Path(directory)
        self.size_limit = int(size_limit)
        self.quota = quota
        self.protect_s = float(protect_s)
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

    def put_image(self, session_id: str, image_id: str, array: np.ndarray, meta: dict,
                  owner: str | None = None) -> list:
        """Store an image and its metadata for one session, within its owner's quota.

        Room is made first from the owner's own images, oldest first; then, if the store's
        images would exceed 80 % of its size limit, from other owners' images that no session
        has shown for `protect_s` seconds. Another owner's current image is never removed.

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
        owner : str, optional
            Whose quota the image counts against (the signed-in user); default the session.

        Returns
        -------
        list of str
            Names of the owner's images removed to make room (oldest first).

        Raises
        ------
        InputError
            If the image is larger than the quota, or the store is full of other owners'
            current images.
        """
        array = np.ascontiguousarray(array)
        array.setflags(write=False)
        key = self._key(session_id, image_id, "array")
        owner = str(owner) if owner else session_id
        removed = self._reserve(owner, session_id, image_id, int(array.nbytes))
        try:
            # streamed to an .npy file (no pickled copy of the array), read back memory-mapped
            self._cache.set(key, _NpyReader(array), read=True)
            self._cache.set(self._key(session_id, image_id, "meta"), dict(meta))
        except BaseException:
            self._account(lambda ledger: self._drop(ledger, session_id, image_id))
            raise
        self._account(lambda ledger: self._mark_written(ledger, owner, session_id, image_id))
        return removed

    # --- quota accounting: {owner: [{"s", "i", "b", "t", "w"}...]} under one record --------

    def _account(self, change):
        """Apply `change(ledger)` to the ledger atomically (all workers); return its result."""
        with self._cache.transact():
            ledger = self._cache.get(self.LEDGER) or {}
            result = change(ledger)
            self._cache.set(self.LEDGER, ledger)
        return result

    @staticmethod
    def _drop(ledger, session_id, image_id):
        for owner in list(ledger):
            ledger[owner] = [e for e in ledger[owner]
                             if (e["s"], e["i"]) != (session_id, image_id)]
            if not ledger[owner]:
                del ledger[owner]

    @staticmethod
    def _mark_written(ledger, owner, session_id, image_id):
        for entry in ledger.get(owner, []):
            if (entry["s"], entry["i"]) == (session_id, image_id):
                entry["w"] = True

    def _remove(self, entry) -> str:
        """Delete an accounted image; return its name."""
        meta = self._cache.get(self._key(entry["s"], entry["i"], "meta")) or {}
        self._cache.delete(self._key(entry["s"], entry["i"], "array"))
        self._cache.delete(self._key(entry["s"], entry["i"], "meta"))
        return str(meta.get("name") or entry["i"][:12])

    def _protected(self, entry, now) -> bool:
        found = self._cache.get(f"{entry['s']}/current")
        return bool(found and found.get("image_id") == entry["i"]
                    and now - found.get("t", 0) < self.protect_s)

    def _reserve(self, owner, session_id, image_id, nbytes) -> list:
        mb = 1024**2
        if nbytes > self.quota:
            raise InputError(f"this image needs {nbytes / mb:,.1f} MB on the server, more than "
                             f"your quota of {self.quota / mb:,.0f} MB (PIPEX_USER_QUOTA_GB)")

        def reserve(ledger):
            now = time.time()
            self._drop(ledger, session_id, image_id)  # a reload replaces its own entry
            for who in list(ledger):  # forget images diskcache evicted, and dead reservations
                ledger[who] = [e for e in ledger[who] if (
                    self._key(e["s"], e["i"], "array") in self._cache if e.get("w")
                    else now - e["t"] < 3600)]
                if not ledger[who]:
                    del ledger[who]
            mine = ledger.setdefault(owner, [])
            removed = []
            while sum(e["b"] for e in mine) + nbytes > self.quota:
                oldest = next((e for e in mine if e.get("w")), None)
                if oldest is None:
                    raise InputError("your other uploads still in progress fill your quota; "
                                     "wait for them to finish")
                mine.remove(oldest)
                removed.append(self._remove(oldest))
            budget = int(0.8 * self.size_limit)
            total = sum(e["b"] for entries in ledger.values() for e in entries)
            if total + nbytes > budget:
                others = sorted((e for who, entries in ledger.items() if who != owner
                                 for e in entries if e.get("w") and not self._protected(e, now)),
                                key=lambda e: e["t"])
                for entry in others:
                    if total + nbytes <= budget:
                        break
                    self._drop(ledger, entry["s"], entry["i"])
                    self._remove(entry)
                    total -= entry["b"]
                while total + nbytes > budget and any(e.get("w") for e in mine):
                    oldest = next(e for e in mine if e.get("w"))
                    mine.remove(oldest)
                    removed.append(self._remove(oldest))
                    total -= oldest["b"]
                if total + nbytes > budget:
                    raise InputError("the server's image store is full of other users' images "
                                     "in use; try again later (or ask for a larger "
                                     "PIPEX_STORE_SIZE_GB)")
            ledger.setdefault(owner, mine).append(
                {"s": session_id, "i": image_id, "b": int(nbytes), "t": now, "w": False})
            return removed

        return self._account(reserve)

    def usage(self, owner: str) -> int:
        """Bytes of images accounted to `owner` (see :meth:`put_image`)."""
        ledger = self._cache.get(self.LEDGER) or {}
        return sum(e["b"] for e in ledger.get(str(owner), []))

    def has_image(self, session_id: str, image_id: str) -> bool:
        """Whether this session holds this image."""
        return self._key(session_id, image_id, "array") in self._cache

    def get_image(self, session_id: str, image_id: str) -> np.ndarray:
        """Return an image of this session: its file mapped copy-on-write (the pages are
        read as they are used and shared by every request and worker; writing to the array
        changes a private copy, never the stored image).

        Raises
        ------
        InputError
            If the session does not hold it (never loaded, or evicted).
        """
        stored = self._cache.get(self._key(session_id, image_id, "array"), read=True)
        if stored is None:
            raise InputError(
                "This image is no longer on the server (expired or evicted). Load it again."
            )
        if isinstance(stored, np.ndarray):  # a store written before images were .npy files
            return stored
        with stored:  # an .npy file: mapped copy-on-write, so no request copies the image
            try:  # its header read by map_npy: np.load's ast parse is not thread-safe
                return np.asarray(map_npy(stored, mode="c"))
            except InputError:
                raise InputError("the stored image is not in the store's format; load it "
                                 "again") from None

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

    def latest_recipe(self, session_id: str, image_id: str):
        """The recipe this session most recently set on this image, or None.

        Per session: image ids are content hashes (a sample's is public), so a recipe kept
        per image would be overwritten by whoever works on the same image."""
        return self.get(session_id, image_id, "recipe")

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
                        {"image_id": _check_image_id(image_id), "rev": rev, "t": time.time()})

    def is_current(self, session_id: str, image_id: str, rev=None) -> bool:
        """Whether the session still shows this image (and this revision, if given).

        True when nothing is recorded yet (a session that never loaded through the app)."""
        found = self._cache.get(f"{check_session_id(session_id)}/current")
        if found is None:
            return True
        if found["image_id"] != image_id:
            return False
        return rev is None or found["rev"] is None or found["rev"] == rev

    def set_owner(self, session_id: str, owner: str) -> None:
        """Record who a session belongs to (the signed-in user), for its quota and job slots
        where no request tells (e.g. computations in background processes)."""
        key = f"{check_session_id(session_id)}/owner"
        if self._cache.get(key) != owner:
            self._cache.set(key, str(owner))

    def owner(self, session_id: str) -> str:
        """Whose quota and job slots a session uses: its recorded owner, or itself."""
        return self._cache.get(f"{check_session_id(session_id)}/owner") or session_id

    def bump(self, session_id: str, name: str, seq: int, what: str | None = None) -> bool:
        """Record request number `seq` of a stream `name` (e.g. the drag previews), and
        `what` it asks for (e.g. its pair); return False if a later one was recorded already
        (this request is superseded)."""
        key = f"{check_session_id(session_id)}/seq/{name}"
        with self._cache.transact():
            latest = self._cache.get(key, -1)
            if seq < latest:
                return False
            self._cache.set(key, int(seq))
            self._cache.set(key + "/what", what)
        return True

    def latest(self, session_id: str, name: str) -> int:
        """The latest request number recorded by :meth:`bump` (-1 if none)."""
        return self._cache.get(f"{check_session_id(session_id)}/seq/{name}", -1)

    def latest_what(self, session_id: str, name: str):
        """What the latest request recorded by :meth:`bump` asks for (None if not said)."""
        return self._cache.get(f"{check_session_id(session_id)}/seq/{name}/what")

    def recent(self, name: str, window_s: float, add: bool = False) -> int:
        """How many events `name` (e.g. failed sign-ins of a user from an address) had in the
        last `window_s` seconds, in every worker; with ``add=True`` this call is one more."""
        if window_s <= 0:
            raise InputError(f"window_s must be positive, got {window_s!r}")
        key = "events/" + hashlib.blake2b(str(name).encode(), digest_size=16).hexdigest()
        now = time.time()
        with self._cache.transact():
            times = [t for t in self._cache.get(key, []) if now - t < window_s]
            if add:
                times.append(now)
                self._cache.set(key, times, expire=window_s)
        return len(times)

    def volume(self) -> int:
        """Bytes used on disk."""
        return self._cache.volume()
