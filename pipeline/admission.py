"""Admission control: a bounded number of heavy computations at a time, per owner and in all.

One user (or session) must never take every request thread of the server with long
computations: each heavy computation takes a slot of its owner (``per_owner`` of them) and a
slot of the server (``total``). A slot is a file of a folder shared by every worker process,
held with ``flock(2)``: the kernel releases it when its holder closes it or dies, so a killed
worker never leaves a slot taken, and nothing has to expire. A process forked while a slot is
held (a background job) closes its inherited copy at once, so the slot is freed when the
computation that took it ends, not when the job does.

A request that finds no free slot waits at most ``wait_s`` (a page starts several panels at
once: they take turns), with at most ``max_waiting`` requests of one owner waiting; then it
is refused with :class:`Busy`, a message for the user. A computation whose result is cached
already needs no slot (see the ``cached`` argument of :meth:`Admission.slot`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = ["Admission", "Busy"]


class Busy(InputError):
    """No slot for a heavy computation: the message says whose jobs fill them.

    ``reason`` is ``"owner"`` (the owner's slots are taken) or ``"server"`` (every slot of
    the server is).
    """

    def __init__(self, message, reason: str = "owner"):
        super().__init__(message)
        self.reason = reason


def try_lock(path: Path):
    """An open descriptor holding an exclusive flock on `path` (created if missing), or None
    if it is taken (or was removed by its holder between our open and our lock: the path's
    file is then another one)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the file may have been pruned (unlinked) between our open and our lock
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _first_free(paths):
    for path in paths:
        fd = try_lock(path)
        if fd is not None:
            return fd
    return None


class Admission:
    """Slots for heavy computations, shared by every process that uses `directory`.

    Parameters
    ----------
    directory : str or Path
        Folder of the slot files (created if missing), e.g. in the state folder.
    per_owner : int
        Computations one owner (a user; a session in local mode) may run at a time.
    total : int
        Computations the whole server may run at a time.
    wait_s : float
        Longest wait for a slot before :class:`Busy` is raised (0: refused at once).
    poll_s : float
        Interval between two attempts while waiting.
    max_waiting : int
        Requests of one owner that may wait at once (a page starts up to four heavy panels
        together); more are refused at once.
    """

    def __init__(self, directory, per_owner: int = 2, total: int = 3, wait_s: float = 0.0,
                 poll_s: float = 0.05, max_waiting: int = 4):
        for name, value in (("per_owner", per_owner), ("total", total),
                            ("max_waiting", max_waiting)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
        if not 0 <= wait_s <= 600:
            raise InputError(f"wait_s must be between 0 and 600 seconds, got {wait_s!r}")
        self.directory = Path(directory)
        (self.directory / "owners").mkdir(parents=True, exist_ok=True)
        self.per_owner = per_owner
        self.total = total
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self.max_waiting = max_waiting
        self._held = threading.local()  # owners whose slot this thread holds (re-entrant)
        self._open = set()  # descriptors of the slots this process holds
        self._open_lock = threading.Lock()
        # a fork waits until no thread is between locking a slot and noting it down
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: ref() is not None and ref()._open_lock.acquire(),
            after_in_parent=lambda: ref() is not None and ref()._open_lock.release(),
            after_in_child=lambda: ref() is not None and ref()._forked())

    def _forked(self):
        # in a child process: its copies of the parent's locked descriptors would keep the
        # parent's slots taken as long as the child lives (flock belongs to the open file)
        for fd in self._open:
            try:
                os.close(fd)
            except OSError:
                pass
        self._open = set()
        self._open_lock = threading.Lock()
        self._held = threading.local()

    def _take(self, paths):
        """The descriptor of the first free slot of `paths` (kept track of), or None."""
        with self._open_lock:
            fd = _first_free(paths)
            if fd is not None:
                self._open.add(fd)
        return fd

    def _give_back(self, fd):
        with self._open_lock:
            self._open.discard(fd)
            os.close(fd)

    def _owner_paths(self, owner, kind="run"):
        digest = hashlib.sha256(str(owner).encode()).hexdigest()[:24]
        count = self.per_owner if kind == "run" else self.max_waiting
        return [self.directory / "owners" / f"{digest}-{kind}-{i}" for i in range(count)]

    def _server_paths(self):
        return [self.directory / f"server-{i}" for i in range(self.total)]

    def _try(self, owner):
        """(owner fd, server fd), or the reason there is none: 'owner' or 'server'."""
        mine = self._take(self._owner_paths(owner))
        if mine is None:
            return "owner"
        server = self._take(self._server_paths())
        if server is None:
            self._give_back(mine)
            return "server"
        return mine, server

    def _refusal(self, reason) -> Busy:
        if reason == "owner":
            n = self.per_owner
            return Busy(f"you already have {n} computation{'s' * (n > 1)} running (in this "
                        "or another tab): wait for it to finish, then try again", "owner")
        return Busy(f"the server is busy ({self.total} computations running for all users): "
                    "try again in a moment", "server")

    def running(self, owner=None) -> int:
        """How many slots are taken (of `owner`, or of the whole server)."""
        paths = self._server_paths() if owner is None else self._owner_paths(owner)
        taken = 0
        for path in paths:
            fd = try_lock(path)
            if fd is None:
                taken += 1
            else:
                os.close(fd)
        return taken

    @contextmanager
    def slot(self, owner: str, cached=None, wait_s: float | None = None, spare: int = 0):
        """Hold a slot of `owner` and of the server while the block runs.

        Parameters
        ----------
        owner : str
            Whose computation it is (a user name; a session id in local mode).
        cached : callable, optional
            Returns True if the result is cached already: asked only when no slot is free,
            and then the block runs without one (a cache hit costs nothing).
        wait_s : float, optional
            Longest wait for this slot (default: the instance's `wait_s`); 0 refuses at once
            (a batch that cannot start is told so rather than left waiting).
        spare : int, optional
            Server slots that must stay free once this one is taken, else :class:`Busy`
            (reason ``"server"``) at once: work nobody waits for (a prefetch) never takes
            the slots a person's request needs.

        Raises
        ------
        Busy
            If no slot frees up within `wait_s`, or `max_waiting` requests of this owner are
            waiting already, or fewer than `spare` server slots would stay free.
        """
        if not owner:
            raise InputError("owner must be given")
        if wait_s is not None and (isinstance(wait_s, bool) or not isinstance(wait_s, (int, float))
                                   or not 0 <= wait_s <= 600):
            raise InputError(f"wait_s must be between 0 and 600 seconds, got {wait_s!r}")
        if isinstance(spare, bool) or not isinstance(spare, int) or not 0 <= spare < self.total:
            raise InputError(f"spare must be a whole number from 0 to {self.total - 1}, "
                             f"got {spare!r}")
        held = self._held.__dict__.setdefault("owners", set())
        if owner in held:  # a computation of this thread's slot asking for more: no new slot
            yield
            return
        got = self._try(owner)
        if spare and not isinstance(got, str) and self.total - self.running() < spare:
            for fd in got:
                self._give_back(fd)
            raise self._refusal("server")
        if isinstance(got, str) and cached is not None and cached():
            yield
            return
        if isinstance(got, str):
            got = self._wait(owner, got, self.wait_s if wait_s is None else float(wait_s))
        held.add(owner)
        try:
            yield
        finally:
            held.discard(owner)
            for fd in got:
                self._give_back(fd)

    def _wait(self, owner, reason, wait_s):
        if wait_s <= 0:
            raise self._refusal(reason)
        waiting = self._take(self._owner_paths(owner, "wait"))
        if waiting is None:  # max_waiting requests of this owner are waiting already
            raise self._refusal(reason)
        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                time.sleep(self.poll_s)
                got = self._try(owner)
                if not isinstance(got, str):
                    return got
                reason = got
            raise self._refusal(reason)
        finally:
            self._give_back(waiting)

    def prune(self, older_than_s: float = 86400.0) -> int:
        """Remove the slot files of owners idle for `older_than_s` seconds; return how many.

        A file is removed only while locked, and a holder checks that the file it locked is
        still the one of its path, so pruning never lets two holders share a slot."""
        now = time.time()
        removed = 0
        for path in (self.directory / "owners").iterdir():
            try:
                if now - path.stat().st_mtime < older_than_s:
                    continue
            except FileNotFoundError:
                continue
            fd = try_lock(path)
            if fd is None:
                continue
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed


def lower_priority(nice: int) -> int:
    """Run this thread, and the threads and processes it starts, at CPU priority `nice`.

    A background job (a large image's exact result, a batch) runs in a process of its own;
    at a lower priority than the server's workers, the cores go first to the requests of
    everyone else (a key press, a page load) and the job takes what they leave. Never
    raises the priority (a process already nicer keeps its value), so calling it again in a
    long-lived process (a Celery worker) changes nothing.

    Parameters
    ----------
    nice : int
        The nice value, 0 (the workers' priority: nothing done) to 19 (the lowest).

    Returns
    -------
    int
        The nice value now in effect (the previous one where the system refused).

    Raises
    ------
    InputError
        If `nice` is not a whole number from 0 to 19.
    """
    if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
        raise InputError(f"nice must be a whole number from 0 to 19, got {nice!r}")
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # Linux: this thread; new ones inherit
        except OSError:
            return current
    return os.getpriority(os.PRIO_PROCESS, 0)
