"""Configuration read from ``PIPEX_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError

__all__ = ["Config"]


def _env_float(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise InputError(f"{name} must be positive, got {raw!r}")
    return value


def _env_seconds(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < 3600:
        raise InputError(f"{name} must be between 0 and 3600 seconds, got {raw!r}")
    return value


def _env_jobs(env, name):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"{name} must be a whole number of workers (1 or more), "
                         f"got {raw!r}") from None
    if value < 1:
        raise InputError(f"{name} must be at least 1, got {raw!r}")
    return value


def _env_int(env, name, default, kind, low, high, out_of_range):
    """A whole number from `env[name]` within [low, high] (`default` when unset)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InputError(f"{name} must be a whole number {kind}, got {raw!r}") from None
    if not low <= value <= high:
        raise InputError(f"{name} must be {out_of_range}, got {raw!r}")
    return value


def _env_count(env, name, default):
    return _env_int(env, name, default, "(1 or more)", 1, float("inf"), "at least 1")


def _env_nice(env, name, default):
    return _env_int(env, name, default, "from 0 to 19", 0, 19,
                    "from 0 (the workers' priority) to 19 (the lowest)")


def _env_flag(env, name):
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InputError(f"{name} must be 1 or 0, got {raw!r}")


def _env_slots(env, name, default):
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a whole number (1 or more), got {raw!r}") from None
    if value < 1:
        raise InputError(f"{name} must be at least 1, got {raw!r}")
    return value


def _env_wait(env, name, default):
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else float(default)
    except ValueError:
        raise InputError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 600:
        raise InputError(f"{name} must be between 0 and 600 seconds, got {raw!r}")
    return value


def _default_max_jobs(env):
    """Heavy jobs at a time on the whole server: one request thread fewer than gunicorn has
    (``PIPEX_WORKERS`` x ``PIPEX_THREADS``), so that pages and /health always find one."""
    return max(2, _env_slots(env, "PIPEX_WORKERS", 2) * _env_slots(env, "PIPEX_THREADS", 2) - 1)


@dataclass(frozen=True)
class Config:
    """Settings of one app instance.

    Parameters
    ----------
    state_dir : Path
        Server-side store of arrays and sessions, shared by all workers (``PIPEX_STATE_DIR``).
    cache_dir : Path
        joblib.Memory cache of computed steps (``PIPEX_CACHE_DIR``).
    data_dir : Path
        The lab's data folder, offered read-only in the loader (``PIPEX_DATA_DIR``).
    max_upload_mb : float
        Largest accepted file in megabytes (``PIPEX_MAX_UPLOAD_MB``).
    max_pixels : int
        Largest accepted image in pixels or voxels (``PIPEX_MAX_PIXELS``).
    store_size_gb : float
        Size limit of the array store (``PIPEX_STORE_SIZE_GB``).
    default_sample : str
        Sample loaded when a session starts.
    jobs : int or None
        Local parallel workers of :mod:`pipeline.parallel` (``PIPEX_JOBS``); None: the CPUs
        this process may use (affinity and cgroup quota).
    dask_address : str or None
        Address of a dask.distributed scheduler that runs blocks and batches
        (``PIPEX_DASK_ADDRESS``, e.g. ``tcp://scheduler:8786``); None: local only.
    max_batch_files : int
        Most files one run of the Batch tab takes (``PIPEX_MAX_BATCH_FILES``).
    celery_broker : str or None
        Redis URL of a Celery broker and result backend for the app's background jobs
        (``PIPEX_CELERY_BROKER``, e.g. ``redis://redis:6379/0``); None: the jobs run in
        processes of the web workers, tracked in a diskcache folder of `state_dir`.
    quick_exact_s : float
        A committed vmin / vmax move draws the exact segmentation at once, without a live
        preview first, when the last exact result with the same filter and method took at
        most this many seconds (``PIPEX_QUICK_EXACT_S``; 0: always preview first).
    prefetch_s : float
        After a key press on a threshold handle, the exact result of the next step in the
        same direction is computed while the person looks, when it is expected within this
        many seconds (``PIPEX_PREFETCH_S``, default 1; 0: never): the next key press is then
        answered from the cache.
    max_job_gb : float
        Memory one segmentation may take (``PIPEX_MAX_JOB_GB``, default 4): a random walker
        estimated above it (:func:`pipeline.randomwalker.estimate_bytes`) is solved by
        overlapping blocks that fit it in the exact background job (:mod:`pipeline.blocks`),
        and refused before it runs, with what fits (a crop, a downsampling factor, another
        solver), where not even one block fits or outside that job.
    users_file : Path or None
        File of ``user:password-hash`` lines (``PIPEX_USERS_FILE``, written by
        ``python -m callbacks.auth adduser NAME``); None: no sign-in (local mode).
    secret_key : str or None
        Key signing the sign-in cookie and the session ids (``PIPEX_SECRET_KEY``); None: one
        generated once and kept in `state_dir` (shared by all workers).
    trust_remote_user : bool
        Accept the user named by a reverse proxy (``REMOTE_USER`` or ``X-Forwarded-User``)
        from `trusted_proxies` (``PIPEX_TRUST_REMOTE_USER=1``).
    trusted_proxies : tuple of str
        Addresses whose user header is trusted (``PIPEX_TRUSTED_PROXIES``, comma-separated).
    user_quota_gb : float or None
        Images one user (one session in local mode) may keep in the store
        (``PIPEX_USER_QUOTA_GB``); None: a quarter of `store_size_gb`.
    user_jobs : int
        Heavy computations one user (session in local mode) may run at a time
        (``PIPEX_USER_JOBS``).
    max_jobs : int
        Heavy computations at a time on the whole server (``PIPEX_MAX_JOBS``; default one
        fewer than ``PIPEX_WORKERS`` x ``PIPEX_THREADS``, at least 2).
    job_wait_s : float
        How long a heavy request may wait for a free slot before it is refused
        (``PIPEX_JOB_WAIT_S``; 0: refused at once).
    job_nice : int
        The CPU priority of background jobs (``PIPEX_JOB_NICE``, a nice value from 0 to 19,
        default 10): a large image's exact result or a batch runs in a process of its own
        (the local job runner) at this lower priority, so that the workers answering
        everyone's key presses and page loads get the cores first (0: the same priority).
    max_work_s : float
        Longest one computation may run (``PIPEX_MAX_WORK_S``, default 300 s): an exact
        segmentation estimated above it is refused before it starts, and one that runs
        longer is stopped (between its steps) with a message.
    job_after_s : float
        An exact segmentation expected to take longer than this (``PIPEX_JOB_AFTER_S``,
        default 1 s; 0: every one not cached) runs as a background job with a progress bar
        and a Cancel button instead of inside the request (:mod:`callbacks.exact_job`).
    bind : str
        Address the server listens on (``PIPEX_BIND``): without `users_file` a warning is
        logged when it is not a loopback address.
    """

    state_dir: Path = Path("var")
    cache_dir: Path = field(default=None)  # type: ignore[assignment]
    data_dir: Path = Path("data")
    max_upload_mb: float = 64.0
    max_pixels: int = 2**27
    store_size_gb: float = 4.0
    default_sample: str = "coins"
    jobs: int | None = None
    dask_address: str | None = None
    max_batch_files: int = 500
    celery_broker: str | None = None
    quick_exact_s: float = 0.25
    prefetch_s: float = 1.0
    max_job_gb: float = 4.0
    users_file: Path | None = None
    secret_key: str | None = None
    trust_remote_user: bool = False
    trusted_proxies: tuple = ("127.0.0.1", "::1")
    user_quota_gb: float | None = None
    user_jobs: int = 2
    max_jobs: int = 3
    job_wait_s: float = 30.0
    max_work_s: float = 300.0
    job_after_s: float = 1.0
    bind: str = "127.0.0.1:8050"
    job_nice: int = 10

    def __post_init__(self):
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        cache = self.cache_dir if self.cache_dir is not None else self.state_dir / "joblib"
        object.__setattr__(self, "cache_dir", Path(cache))

    @property
    def max_bytes(self) -> int:
        """Largest accepted file, in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def store_dir(self) -> Path:
        """Folder of the shared array store."""
        return self.state_dir / "store"

    @classmethod
    def from_env(cls, env=None, **overrides) -> "Config":
        """Build a configuration from environment variables.

        Parameters
        ----------
        env : mapping, optional
            Environment to read; ``os.environ`` by default.
        **overrides
            Fields that take precedence over the environment.
        """
        env = os.environ if env is None else env
        state_dir = Path(env.get("PIPEX_STATE_DIR") or "var")
        cfg = cls(
            state_dir=state_dir,
            cache_dir=Path(env["PIPEX_CACHE_DIR"]) if env.get("PIPEX_CACHE_DIR") else None,
            data_dir=Path(env.get("PIPEX_DATA_DIR") or "data"),
            max_upload_mb=_env_float(env, "PIPEX_MAX_UPLOAD_MB", 64),
            max_pixels=int(_env_float(env, "PIPEX_MAX_PIXELS", 2**27)),
            store_size_gb=_env_float(env, "PIPEX_STORE_SIZE_GB", 4),
            jobs=_env_jobs(env, "PIPEX_JOBS"),
            dask_address=(env.get("PIPEX_DASK_ADDRESS") or "").strip() or None,
            max_batch_files=_env_count(env, "PIPEX_MAX_BATCH_FILES", 500),
            celery_broker=(env.get("PIPEX_CELERY_BROKER") or "").strip() or None,
            quick_exact_s=_env_seconds(env, "PIPEX_QUICK_EXACT_S", 0.25),
            prefetch_s=_env_seconds(env, "PIPEX_PREFETCH_S", 1),
            max_job_gb=_env_float(env, "PIPEX_MAX_JOB_GB", 4),
            users_file=Path(env["PIPEX_USERS_FILE"]) if env.get("PIPEX_USERS_FILE") else None,
            secret_key=env.get("PIPEX_SECRET_KEY") or None,
            trust_remote_user=_env_flag(env, "PIPEX_TRUST_REMOTE_USER"),
            trusted_proxies=tuple(a.strip() for a in (
                env.get("PIPEX_TRUSTED_PROXIES") or "127.0.0.1,::1").split(",") if a.strip()),
            user_quota_gb=(_env_float(env, "PIPEX_USER_QUOTA_GB", 1)
                           if env.get("PIPEX_USER_QUOTA_GB") else None),
            user_jobs=_env_slots(env, "PIPEX_USER_JOBS", 2),
            max_jobs=_env_slots(env, "PIPEX_MAX_JOBS", _default_max_jobs(env)),
            job_wait_s=_env_wait(env, "PIPEX_JOB_WAIT_S", 30),
            max_work_s=_env_float(env, "PIPEX_MAX_WORK_S", 300),
            job_after_s=_env_seconds(env, "PIPEX_JOB_AFTER_S", 1),
            bind=(env.get("PIPEX_BIND") or "127.0.0.1:8050").strip(),
            job_nice=_env_nice(env, "PIPEX_JOB_NICE", 10),
        )
        return replace(cfg, **overrides) if overrides else cfg
