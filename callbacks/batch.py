"""The Batch tab: the current recipe over a folder of the data folder or several uploads.

The run is a Dash background callback (the app's job runner, :mod:`callbacks.jobs`): it runs
in its own process, reports its progress (files done / total, the files in progress, the time
left) and is cancelled by the Cancel button (the manager kills the job's process and its
workers; the job also stops between files when it sees its ``cancel`` flag). The work itself
is the batch of ``python -m pipeline run`` (:mod:`pipeline.batch`): each image read here (size
checked before it is read, pixels checked from its header before it is decoded), run by the
parallel backend (:func:`pipeline.parallel.map_items`, local processes or the dask scheduler
of ``PIPEX_DASK_ADDRESS``), a file that fails listed with its reason while the others go on.

**Whose jobs.** A batch belongs to an *owner* that outlives the page (a reload or a closed
tab makes a new session): the signed-in user when sign-in is on (``user:NAME``, the session's
recorded owner, :mod:`callbacks.auth`), else this browser (``browser:<id>``, a random id of
32 hex digits the page keeps in ``localStorage``, :data:`components.ids.BATCH_BROWSER`,
checked here and used for nothing but finding this browser's own batches). On page load the
tab lists the owner's running and recent batches and re-attaches to a running one: a timer
reads its status (progress, the table, the zip when done) and Cancel flags it.

**Admission.** A batch is a heavy job: it holds a slot of its owner and of the server
(:mod:`pipeline.admission`, with the interactive computations; ``PIPEX_USER_JOBS`` per
owner) while it runs. A batch that finds no free slot is not started and says why and when
it can (the owner's running batches and their time left).

Everything a job writes is under ``<state_dir>/batch/<owner key>/<job>/`` (the key is a hash
of the owner; shared by the workers): ``status.json`` (state, pid, files done, rows), each
file's outputs as they finish (written complete or not at all), and at the end
``results.zip`` with a label TIFF and a measurements CSV per image, the combined
``measurements.csv`` (a row per object, a summary row per image), ``recipe.json`` and
``pipeline.py`` (the exported script). Only a finished job has a zip: a cancelled or killed
job never offers half its results as done. A new run keeps the owner's :data:`KEEP_JOBS`
most recent jobs. Uploads are staged in ``<state_dir>/batch/<owner key>/uploads/``.

Callback bodies are module-level functions taking plain values (tests call them directly).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from dash import Input, Output, State, ctx, html, no_update, set_props
from dash.exceptions import PreventUpdate
from flask import abort, send_file

from components import ids
from components.batch import jobs_list, results_table
from pipeline import batch as _batch  # the batch of `python -m pipeline run`
from pipeline import io, measure, parallel
from pipeline import recipe as recipes
from pipeline.admission import Busy
from pipeline.errors import InputError
from pipeline.provenance import library_versions
from pipeline.script import to_script
from pipeline.store import check_session_id

from .auth import signed_in_as
from .loading import message_children
from .params import load_history, resolve_state

log = logging.getLogger(__name__)

#: Folder of the batch jobs and staged uploads, inside the state folder.
BATCH_FOLDER = "batch"
UPLOADS_FOLDER = "uploads"
#: Values of the source dropdown: every file of the data folder, a folder of it, the uploads.
DATA_PREFIX = "data:"
ALL_FILES = DATA_PREFIX
UPLOADS_SOURCE = "uploads"
ZIP_NAME = "results.zip"
STATUS_NAME = "status.json"
CANCEL_FLAG = "cancel"
_JOB_RE = re.compile(r"[0-9a-f]{32}")
_BROWSER_RE = _JOB_RE  # a browser's id: 32 hex digits, made by the page
COMMAND = _batch.TAB_COMMAND
#: Jobs of an owner kept (listed, their zips served) when a new one starts.
KEEP_JOBS = 5
#: The owners of batch jobs: a signed-in user, a browser (local mode), a session (a client
#: that sends no browser id, e.g. a script posting to Dash's routes).
OWNER_KINDS = ("user:", "browser:", "session:")


# --------------------------------------------------------------------------------------------
# Where things are


def signin_enabled(config) -> bool:
    """Whether the server asks people to sign in (``PIPEX_USERS_FILE`` or a trusted proxy)."""
    return bool(getattr(config, "users_file", None)) or bool(
        getattr(config, "trust_remote_user", False))


def batch_owner(services, session_id, browser_id=None) -> str:
    """Who a page's batches belong to: ``user:NAME``, ``browser:<id>`` or ``session:<id>``.

    Parameters
    ----------
    services : callbacks.services.Services
    session_id : str
        The page's session: with sign-in on, its recorded owner is the signed-in user (each
        request naming a session id is checked to be the user's, :mod:`callbacks.auth`).
    browser_id : str, optional
        The page's browser id (32 hex digits), used in local mode only. None (a client
        without one): the session's own batches.

    Raises
    ------
    InputError
        If `session_id` or `browser_id` is malformed, or sign-in is on and the session has
        no user.
    """
    check_session_id(session_id)
    owner = services.owner(session_id)
    if isinstance(owner, str) and owner.startswith("user:"):
        return owner
    if signin_enabled(services.config):
        raise InputError("This page's session has no signed-in user: reload the page.")
    if browser_id is None:
        return f"session:{session_id}"
    if not isinstance(browser_id, str) or not _BROWSER_RE.fullmatch(browser_id):
        raise InputError(f"browser_id must be 32 hex digits, got {str(browser_id)[:40]!r}")
    return f"browser:{browser_id}"


def _check_owner(owner) -> str:
    if not isinstance(owner, str) or not owner.startswith(OWNER_KINDS) or \
            len(owner) > 200 or owner.split(":", 1)[1] == "":
        raise InputError(f"owner must be one of {', '.join(k + '...' for k in OWNER_KINDS)}, "
                         f"got {str(owner)[:60]!r}")
    return owner


def owner_key(owner) -> str:
    """The folder name (and zip address part) of an owner: 32 hex digits of its hash."""
    return hashlib.sha256(_check_owner(owner).encode()).hexdigest()[:32]


def owner_dir(config, owner) -> Path:
    """``<state_dir>/batch/<owner key>``: this owner's batch jobs and uploads."""
    return Path(config.state_dir) / BATCH_FOLDER / owner_key(owner)


def job_dir(config, owner, job_id) -> Path:
    """The folder of one job of an owner.

    Raises
    ------
    InputError
        If `owner` or `job_id` is malformed (32 hex digits).
    """
    if not isinstance(job_id, str) or not _JOB_RE.fullmatch(job_id):
        raise InputError(f"job_id must be 32 hex digits, got {job_id!r}")
    return owner_dir(config, owner) / job_id


def zip_url(owner, job_id, prefix="/") -> str:
    """Address of a finished job's zip (served by the route :func:`register` adds)."""
    return f"{prefix.rstrip('/')}/_pipex/batch/{owner_key(owner)}/{job_id}/{ZIP_NAME}"


def _write_json(path: Path, data) -> None:
    _batch.write_atomic(path, json.dumps(data))


def _alive(status) -> bool:
    """Whether the process of a running job still runs (on this machine; another machine's
    job, e.g. a Celery worker's, counts as running)."""
    if status.get("host") not in (None, socket.gethostname()):
        return True
    try:
        import psutil

        proc = psutil.Process(int(status.get("pid")))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = status.get("pid_started")
        return started is None or abs(proc.create_time() - float(started)) < 1.0
    except (ImportError, TypeError, ValueError):
        return True
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess, AccessDenied...
        return False


def read_status(config, owner, job_id=None) -> dict | None:
    """The status of a job (the owner's latest when `job_id` is None), or None.

    A job whose status says ``running`` but whose process is gone (killed by Cancel on the
    page that started it, or by a restart) reads ``cancelled`` (Cancel was pressed) or
    ``interrupted``.
    """
    try:
        if job_id is None:
            job_id = (owner_dir(config, owner) / "latest").read_text().strip()
        folder = job_dir(config, owner, job_id)
        status = json.loads((folder / STATUS_NAME).read_text())
    except (OSError, ValueError, InputError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("state") == "running" and not _alive(status):
        if (folder / CANCEL_FLAG).exists():
            status.update(state="cancelled", message=(
                f"Cancelled after {status.get('done', 0)} of {status.get('total', '?')} "
                "files: nothing was packed (a zip is made only when every file has run)."))
        else:
            status.update(state="interrupted", message=(
                f"Interrupted after {status.get('done', 0)} of {status.get('total', '?')} "
                "files (its process ended): nothing was packed. Run it again."))
    return status


def list_jobs(config, owner) -> list[dict]:
    """The owner's jobs (:func:`read_status` of each), newest first."""
    try:
        folders = [p for p in owner_dir(config, owner).iterdir()
                   if p.is_dir() and _JOB_RE.fullmatch(p.name)]
    except (OSError, InputError):
        return []
    found = [read_status(config, owner, p.name) for p in folders]
    found = [s for s in found if s is not None and s.get("job")]
    return sorted(found, key=lambda s: s.get("started_at", 0), reverse=True)


# --------------------------------------------------------------------------------------------
# The images of a batch


def data_folders(data_dir, files=None) -> list[str]:
    """The folders of the data folder that hold images (relative, ``/``-separated, sorted).

    Parameters
    ----------
    data_dir : str or Path
    files : list of str, optional
        :func:`pipeline.io.list_data_files` of `data_dir`, if already listed.
    """
    files = io.list_data_files(data_dir) if files is None else files
    folders = set()
    for name in files:
        parts = PurePosixPath(name).parts[:-1]
        folders.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(folders)


def check_folder(folder) -> str:
    """A folder of the data folder as a clean relative path ('' for the whole folder).

    Raises
    ------
    InputError
        If `folder` is not a string, is absolute, contains ``..``, a backslash, a NUL or a
        hidden component.
    """
    if folder is None:
        return ""
    if not isinstance(folder, str):
        raise InputError(f"folder must be a path relative to the data folder, got "
                         f"{type(folder).__name__}")
    refused = f"{folder!r} is not a folder of the data folder"
    if "\x00" in folder or "\\" in folder:
        raise InputError(f"{refused}: the name contains forbidden characters.")
    pure = PurePosixPath(folder)
    if pure.is_absolute() or PureWindowsPath(folder).drive or folder.startswith("~"):
        raise InputError(f"{refused}: only paths relative to the data folder are accepted.")
    if ".." in pure.parts:
        raise InputError(f"{refused}: '..' is not accepted in paths.")
    if any(part.startswith(".") for part in pure.parts):
        raise InputError(f"{refused}: hidden folders are not offered.")
    return pure.as_posix() if pure.parts else ""


def folder_files(data_dir, folder, max_files: int) -> list[tuple[str, Path]]:
    """The images of a folder of the data folder (and its subfolders), at most `max_files`.

    Parameters
    ----------
    data_dir : str or Path
        The data folder.
    folder : str
        Relative folder ('' for all files), see :func:`check_folder`.
    max_files : int
        The largest batch.

    Returns
    -------
    list of (str, Path)
        Name relative to the data folder and resolved path (inside it), sorted.

    Raises
    ------
    InputError
        If the folder is refused, missing, empty of images or holds more than `max_files`.
    """
    folder = check_folder(folder)
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError("the data folder does not exist on the server.")
    real_root = root.resolve()
    where = f"folder {folder!r}" if folder else "the data folder"
    if folder:
        real = (real_root / folder).resolve()
        if not real.is_relative_to(real_root):
            raise InputError(f"{folder!r} is not a folder of the data folder: it points "
                             "outside it.")
        if not real.is_dir():
            raise InputError(f"{folder!r} is not a folder of the data folder.")
    listed = io.list_data_files(real_root / folder if folder else real_root,
                                max_files=max_files + 1)
    if len(listed) > max_files:
        raise InputError(f"{where} holds more than {max_files} images, the most one batch "
                         "takes (PIPEX_MAX_BATCH_FILES): choose a subfolder.")
    if not listed:
        raise InputError(f"{where} holds no image files "
                         f"({', '.join(io.SUPPORTED_EXTENSIONS)}).")
    out = []
    for name in listed:
        relpath = f"{folder}/{name}" if folder else name
        out.append((relpath, io.resolve_data_file(data_dir, relpath)))  # the loader's checks
    return out


def upload_dir(config, owner) -> Path:
    """Folder of this owner's staged uploads."""
    return owner_dir(config, owner) / UPLOADS_FOLDER


def staged_uploads(config, owner) -> list[str]:
    """Names of this owner's staged uploads, sorted."""
    try:
        folder = upload_dir(config, owner)
        return sorted(p.name for p in folder.iterdir()
                      if p.is_file() and not p.name.endswith(".part"))
    except (OSError, InputError):
        return []


def _upload_name(filename) -> str:
    name = io._display_name(filename)
    name = re.sub(r"[^\w.\- ()+,]", "_", name).strip() or "image"
    if name.startswith(".") or name.endswith(".part"):
        name = "_" + name.lstrip(".") if name.startswith(".") else name + "_"
    return name[:150]


def _upload_bytes(contents, name, max_bytes: int) -> bytes:
    """The bytes of a ``dcc.Upload`` data URL, size checked before decoding."""
    if not isinstance(contents, str) or not contents.startswith("data:"):
        raise InputError(f"the upload of {name} is malformed (expected a base64 data URL).")
    comma = contents.find(",", 0, 1024)
    if comma < 0 or contents[5:comma].rsplit(";", 1)[-1].strip().lower() != "base64":
        raise InputError(f"the upload of {name} is malformed (expected a base64 data URL).")
    n_chars = len(contents) - comma - 1
    io._check_file_size(n_chars // 4 * 3, max_bytes)
    try:
        data = base64.b64decode(contents[comma + 1:], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"the upload of {name} is malformed (invalid base64 data).") from None
    io._check_file_size(len(data), max_bytes)
    return data


def stage_uploads(config, owner, contents, filenames) -> tuple[list[str], list[str]]:
    """Keep uploaded files for a batch of this owner (a file of the same name is replaced).

    Only the size is checked here (a file that cannot be decoded is listed with its reason
    when the batch runs).

    Parameters
    ----------
    config : pipeline.config.Config
    owner : str
        :func:`batch_owner`.
    contents, filenames : list of str
        ``dcc.Upload(multiple=True)``'s ``contents`` and ``filename``.

    Returns
    -------
    names : list of str
        The owner's staged uploads now.
    problems : list of str
        One message per refused file.
    """
    folder = upload_dir(config, owner)
    if isinstance(contents, str):
        contents, filenames = [contents], [filenames]
    if not isinstance(contents, list):
        raise InputError("the upload is malformed: expected a list of files.")
    filenames = filenames if isinstance(filenames, list) else [None] * len(contents)
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for data_url, filename in zip(contents, filenames):
        name = _upload_name(filename)
        have = staged_uploads(config, owner)
        if name not in have and len(have) >= config.max_batch_files:
            problems.append(f"{name}: a batch takes at most {config.max_batch_files} files "
                            "(PIPEX_MAX_BATCH_FILES).")
            continue
        try:
            _batch.write_atomic(folder / name, _upload_bytes(data_url, name, config.max_bytes))
        except InputError as exc:
            problems.append(f"{name}: {exc}")
        except OSError as exc:
            problems.append(f"{name}: could not be kept on the server ({exc.strerror or exc}).")
    return staged_uploads(config, owner), problems


def clear_uploads(config, owner) -> None:
    """Forget this owner's staged uploads."""
    shutil.rmtree(upload_dir(config, owner), ignore_errors=True)


def source_options(config, owner) -> list[dict]:
    """Options of the source dropdown: all files, each folder, the uploads (with counts)."""
    files = io.list_data_files(config.data_dir)
    options = [{"label": f"All files of the data folder ({len(files)})", "value": ALL_FILES}]
    for folder in data_folders(config.data_dir, files):
        count = sum(f.startswith(folder + "/") for f in files)
        options.append({"label": f"{folder}/ ({count})", "value": DATA_PREFIX + folder})
    uploads = staged_uploads(config, owner)
    options.append({"label": f"Uploaded files ({len(uploads)})", "value": UPLOADS_SOURCE})
    return options


def batch_inputs(config, owner, source) -> list[tuple[str, Path]]:
    """The files of a batch: (name shown, path), at most ``config.max_batch_files``.

    Parameters
    ----------
    owner : str
        Whose uploads (:func:`batch_owner`).
    source : str
        ``"data:"`` (all files of the data folder), ``"data:<folder>"``, or ``"uploads"``.

    Raises
    ------
    InputError
        If the source is unknown or refused, has no image, or too many.
    """
    if source == UPLOADS_SOURCE:
        names = staged_uploads(config, owner)
        if not names:
            raise InputError("No uploaded files: upload images first, or choose a folder of "
                             "the data folder.")
        if len(names) > config.max_batch_files:
            raise InputError(f"{len(names)} uploaded files, the most one batch takes is "
                             f"{config.max_batch_files} (PIPEX_MAX_BATCH_FILES).")
        folder = upload_dir(config, owner)
        return [(name, folder / name) for name in names]
    if isinstance(source, str) and source.startswith(DATA_PREFIX):
        return folder_files(config.data_dir, source[len(DATA_PREFIX):], config.max_batch_files)
    raise InputError("Choose the images: a folder of the data folder, or the uploaded files.")


def batch_recipe(store, session_id, history, series=None) -> dict:
    """The page's current recipe, read from the server's undo history and validated, reading
    image series `series` of each file (the Series menu's, for the image shown; None or 0:
    the first series).

    Raises
    ------
    InputError
        If there is no history yet (no image loaded) or it is gone from the server.
    """
    if not history:
        raise InputError("No recipe yet: load an image and set up the pipeline first.")
    try:
        full = load_history(store, session_id, history)
        recipe = resolve_state(store, session_id, full["image_id"], full["states"][full["index"]])
    except (KeyError, TypeError, IndexError):
        raise InputError("The page's recipe pointer is malformed: reload the page.") from None
    return recipes.with_series(recipes.validate(recipe), series)


# --------------------------------------------------------------------------------------------
# Running a batch


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(done: int, total: int, elapsed: float, running=()) -> str:
    """``"3 of 40 files done · working on a.tif, b.tif · about 1 min 05 s left"``."""
    parts = [f"{done} of {total} file{'s' if total != 1 else ''} done"]
    running = list(running)
    if running and done < total:
        shown = ", ".join(running[:3]) + (f" and {len(running) - 3} more"
                                          if len(running) > 3 else "")
        parts.append(f"working on {shown}")
    if 0 < done < total:
        parts.append(f"about {_duration(elapsed / done * (total - done))} left")
    return " · ".join(parts)


def _forget_old_jobs(config, owner, keep: int = KEEP_JOBS - 1) -> None:
    """Remove the owner's finished jobs but the `keep` most recent (disk stays bounded).

    Running jobs are kept whatever their number (admission bounds it)."""
    finished = [s for s in list_jobs(config, owner) if s.get("state") != "running"]
    for status in finished[keep:]:
        shutil.rmtree(job_dir(config, owner, status["job"]), ignore_errors=True)
    # a folder without a readable status (a job that died before writing it)
    root = owner_dir(config, owner)
    listed = {s["job"] for s in list_jobs(config, owner)}
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.is_dir() and _JOB_RE.fullmatch(entry.name) and entry.name not in listed:
            try:
                old = time.time() - entry.stat().st_mtime > 3600
            except OSError:
                continue
            if old:
                shutil.rmtree(entry, ignore_errors=True)


def source_label(source) -> str:
    """A batch's source in words: "the data folder", "folder sub/", "uploaded files"."""
    if source == UPLOADS_SOURCE:
        return "uploaded files"
    if isinstance(source, str) and source.startswith(DATA_PREFIX):
        folder = source[len(DATA_PREFIX):]
        return f"folder {folder}/" if folder else "the data folder"
    return str(source)


def time_left(status, now: float | None = None) -> float | None:
    """Seconds a running job has left, from its pace so far (None before its first file)."""
    done, total = status.get("done", 0), status.get("total", 0)
    started = status.get("started_at")
    if not done or not total or started is None or done >= total:
        return None
    now = time.time() if now is None else now
    return max(0.0, (now - float(started)) / done * (total - done))


def busy_message(config, owner, reason: str, now: float | None = None) -> str:
    """Why a batch cannot start and when it can (`reason`: :class:`pipeline.admission.Busy`'s).
    """
    if reason == "server":
        return (f"the server is running {config.max_jobs} heavy jobs for all users (the most "
                "it runs at once, PIPEX_MAX_JOBS): it can start when one of them ends; try "
                "again in a minute.")
    n = config.user_jobs
    text = (f"you already have {n} heavy job{'s' if n != 1 else ''} running (the most one "
            f"person runs at once, PIPEX_USER_JOBS = {n}; batches and the page's computations "
            "count)")
    running = [s for s in list_jobs(config, owner) if s.get("state") == "running"]
    if not running:
        return text + (": it can start when they end (a computation of the page takes "
                       "seconds); try again in a moment.")
    parts, lefts = [], []
    for status in running:
        left = time_left(status, now)
        when = _dt.datetime.fromtimestamp(float(status.get("started_at", 0))).strftime("%H:%M")
        parts.append(f"the batch of {source_label(status.get('source'))} started at {when}, "
                     f"{status.get('done', 0)} of {status.get('total', '?')} files done"
                     + (f", about {_duration(left)} left" if left is not None else ""))
        if left is not None:
            lefts.append(left)
    when = (f"in about {_duration(min(lefts))}, when the first of them ends" if lefts
            else "when one of them ends")
    return f"{text}: {'; '.join(parts)}. It can start {when} (or Cancel one)."


#: A job or upload folder (of any session) untouched this long is removed when a batch starts.
KEEP_SECONDS = 7 * 24 * 3600


def sweep_old(config, keep_seconds: float = KEEP_SECONDS, now: float | None = None) -> int:
    """Remove job and upload folders of any session untouched for `keep_seconds`.

    A running job rewrites its status after every file, so only abandoned folders go (a
    session whose page was closed). Returns the number of folders removed.
    """
    root = Path(config.state_dir) / BATCH_FOLDER
    now = time.time() if now is None else now
    removed = 0
    try:
        sessions = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return 0
    for session in sessions:
        try:
            entries = list(session.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                old = entry.is_dir() and now - entry.stat().st_mtime > keep_seconds
            except OSError:
                continue
            if old and (entry.name == UPLOADS_FOLDER or _JOB_RE.fullmatch(entry.name)):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _process_started() -> float | None:
    """This process's start time (psutil), to tell it from a later process of the same pid."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - psutil missing or refused: the pid alone
        return None


def run_batch(services, session_id, history, source, *, owner=None, set_progress=None,
              backend=None, job_id=None, on_start=None, series=None) -> dict:
    """Run the page's current recipe over a batch of images; pack the results in a zip.

    Parameters
    ----------
    services : callbacks.services.Services
    session_id : str
    history : dict
        The page's history pointer (the current recipe is read from the server's store).
    source : str
        See :func:`batch_inputs`.
    owner : str, optional
        Whose job it is (:func:`batch_owner`); default the session's.
    set_progress : callable, optional
        ``set_progress((done, total, text))``: Dash's progress setter.
    backend : pipeline.parallel.Backend, optional
        Default: the config's (``PIPEX_JOBS`` / ``PIPEX_DASK_ADDRESS``) with local processes,
        as ``python -m pipeline run``.
    job_id : str, optional
        32 hex digits (a new one by default).
    on_start : callable, optional
        ``on_start(job_id)`` once the job has its slot and its folder.
    series : int, optional
        The image series of each file to read: the one shown (a data-folder TIFF's Series
        menu, ``meta["series"]``), as the recipe was tuned on it; None or 0 for the first.

    Returns
    -------
    dict
        ``job``, ``state`` (``"done"``, ``"cancelled"`` or ``"failed"``: no file could be
        processed), ``rows`` (per file: ``file``, ``regions``, ``status`` = ``ok`` / ``failed``
        / ``cancelled``, ``message``), ``message``, ``zip`` (path of the zip, or None).

    Raises
    ------
    InputError
        Before any work: no recipe, a refused source, too many files; no free job slot for
        the owner or the server (the message says when the batch can start).
    """
    config = services.config
    owner = _check_owner(batch_owner(services, session_id) if owner is None else owner)
    recipe = batch_recipe(services.store, session_id, history, series)
    inputs = batch_inputs(config, owner, source)
    job_id = job_id or uuid.uuid4().hex
    folder = job_dir(config, owner, job_id)
    admission = services.admission
    slot = admission.slot(owner, wait_s=0) if admission is not None else contextlib.nullcontext()
    try:
        slot.__enter__()
    except Busy as exc:
        raise InputError(busy_message(config, owner, exc.reason)) from None
    try:
        _forget_old_jobs(config, owner)
        sweep_old(config)
        folder.mkdir(parents=True, exist_ok=True)
        _batch.write_atomic(owner_dir(config, owner) / "latest", job_id)
        return _run_job(services, recipe, inputs, owner, source, job_id, folder,
                        set_progress=set_progress, backend=backend, on_start=on_start)
    finally:
        slot.__exit__(None, None, None)


def _run_job(services, recipe, inputs, owner, source, job_id, folder, *, set_progress,
             backend, on_start):
    config = services.config
    n = len(inputs)
    shown = [name for name, _ in inputs]
    stems = [stem for _, stem in _batch.output_names([path for _, path in inputs])]
    rows: list = [None] * n
    values: list = [None] * n
    in_progress: dict = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    versions = library_versions()  # once, for every file's provenance
    status = {"job": job_id, "state": "running", "pid": os.getpid(), "host": socket.gethostname(),
              "pid_started": _process_started(), "source": source, "total": n, "done": 0,
              "started": _now(), "started_at": time.time(), "rows": []}

    def save_status(**changes):
        status.update(changes)
        status["rows"] = [r for r in rows if r is not None]
        try:
            _write_json(folder / STATUS_NAME, status)
        except OSError:
            log.warning("could not write the status of batch %s", job_id, exc_info=True)

    def report(done):
        with lock:
            running = [shown[i] for i in sorted(in_progress)]
        text = progress_text(done, n, time.monotonic() - t0, running)
        save_status(done=done, text=text)  # first: a page re-attached reads it
        if set_progress is not None:
            set_progress((done, n, text))

    def items():
        for i, (_, path) in enumerate(inputs):
            data = _batch.read_bytes(path, config.max_bytes)  # size checked before reading
            with lock:
                in_progress[i] = True
            yield path.name, data

    def on_result(index, value):
        with lock:
            in_progress.pop(index, None)
        if isinstance(value, parallel.Failed):
            rows[index] = {"file": shown[index], "regions": None,
                           "status": "cancelled" if value.kind == "cancelled" else "failed",
                           "message": value.error}
            return
        info = {"generator": "Pipeline Explorer", "command": COMMAND, "created": _now(),
                "input": {**value["meta"], "name": shown[index]}, "recipe": recipe,
                "versions": versions}
        try:
            _batch.write_atomic(folder / f"{stems[index]}_labels.tif", value["tiff"])
            _batch.write_atomic(folder / f"{stems[index]}_measurements.csv",
                                measure.to_csv(value["measurements"], info))
        except OSError as exc:
            rows[index] = {"file": shown[index], "regions": None, "status": "failed",
                           "message": f"could not write the result: {exc.strerror or exc}"}
            return
        values[index] = dict(value, tiff=None)  # written: free the bytes
        rows[index] = {"file": shown[index], "regions": value["summary"]["objects"],
                       "status": "ok", "message": ""}

    def should_stop():
        return (folder / CANCEL_FLAG).exists()

    save_status()
    if on_start is not None:
        on_start(job_id)
    own = backend is None
    backend = parallel.Backend.from_config(config, prefer="processes") if own else backend
    try:
        _, run = parallel.map_items(
            _batch.ProcessImage(recipe, config.max_bytes, config.max_pixels, command=COMMAND,
                                versions=versions), items(), total=n,
            backend=backend, label="batch", progress=lambda done, _total: report(done),
            should_stop=should_stop, on_error="return", on_result=on_result)
    finally:
        if own:
            backend.close()
    for i in range(n):
        if rows[i] is None:
            rows[i] = {"file": shown[i], "regions": None, "status": "cancelled",
                       "message": "not run"}
    ok = sum(r["status"] == "ok" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    how = run.summary()
    if run.cancelled or should_stop():
        message = (f"Cancelled after {run.done} of {n} files: nothing was packed (a zip is "
                   "made only when every file has run).")
        save_status(state="cancelled", message=message)
        return {"job": job_id, "state": "cancelled", "rows": rows, "message": message,
                "zip": None}
    if not ok:
        message = f"No file could be processed ({n} failed; the reasons are in the table)."
        save_status(state="failed", message=message)
        return {"job": job_id, "state": "failed", "rows": rows, "message": message,
                "zip": None}
    zip_path = _pack(folder, recipe, shown, stems, values, rows, source)
    message = (f"{n} file{'s' if n != 1 else ''}: {ok} done"
               + (f", {failed} failed" if failed else "") + f" ({how}).")
    save_status(state="done", message=message, zip=ZIP_NAME)
    return {"job": job_id, "state": "done", "rows": rows, "message": message,
            "zip": str(zip_path)}


def _pack(folder: Path, recipe, shown, stems, values, rows, source) -> Path:
    """Write ``results.zip`` (complete or not at all) and remove the files packed in it."""
    tables, summaries, inputs = [], [], []
    for name, stem, value, row in zip(shown, stems, values, rows):
        if value is not None:
            tables.append((name, value["measurements"]))
            summaries.append((name, value["summary"]))
            inputs.append({"image": name, "input_hash": value["meta"]["id"],
                           "shape": value["meta"]["shape"], "dtype": value["meta"]["dtype"],
                           "labels": f"{stem}_labels.tif",
                           "objects": value["summary"]["objects"]})
        else:
            summaries.append((name, {"error": row["message"]}))
    info = {"generator": "Pipeline Explorer", "command": COMMAND, "created": _now(),
            "source": source, "recipe": recipe, "inputs": inputs,
            "failed": [{"image": r["file"], "error": r["message"]} for r in rows
                       if r["status"] != "ok"],
            "versions": library_versions()}
    combined = measure.to_csv(_batch.combine(tables, summaries), info)
    script = to_script(recipe, {k: info[k] for k in ("generator", "command", "created",
                                                       "versions")})
    packed = []
    part = folder / (ZIP_NAME + ".part")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for stem, value in zip(stems, values):
            if value is None:
                continue
            for suffix in ("_labels.tif", "_measurements.csv"):
                path = folder / f"{stem}{suffix}"
                # the TIFFs are deflate-compressed already: stored as they are
                archive.write(path, path.name, compress_type=zipfile.ZIP_STORED
                              if suffix == "_labels.tif" else zipfile.ZIP_DEFLATED)
                packed.append(path)
        archive.writestr("measurements.csv", combined)
        archive.writestr("recipe.json", recipes.dumps(recipe))
        archive.writestr("pipeline.py", script)
    target = folder / ZIP_NAME
    os.replace(part, target)
    for path in packed:
        path.unlink(missing_ok=True)
    return target


def cancel_batch(config, owner, job_id=None) -> dict | None:
    """Ask a running batch of the owner to stop; what it had done (None if no batch ran).

    Parameters
    ----------
    owner : str
        :func:`batch_owner`.
    job_id : str, optional
        The job the page shows; when it is not running (or not given), the owner's latest
        running job.

    The job stops before its next file when it sees the flag (on the page that started it,
    the job runner also kills its process). Returns ``{"state", "rows", "message"}``.
    """
    status = read_status(config, owner, job_id) if job_id else None
    if status is None or status.get("state") != "running":
        running = [s for s in list_jobs(config, owner) if s.get("state") == "running"]
        status = running[0] if running else (status or read_status(config, owner))
    if status is None:
        return None
    if status.get("state") != "running":
        return {"state": status.get("state"), "rows": status.get("rows", []),
                "message": "The batch had already finished."}
    try:
        (job_dir(config, owner, status["job"]) / CANCEL_FLAG).touch()
    except (OSError, InputError, KeyError):
        log.warning("could not flag the batch for cancelling", exc_info=True)
    done = status.get("done", 0)
    return {"state": "cancelled", "job": status.get("job"), "rows": status.get("rows", []),
            "message": f"Cancelled after {done} of {status.get('total', '?')} files: nothing "
                       "was packed (a zip is made only when every file has run)."}


# --------------------------------------------------------------------------------------------
# Callback outputs


def _zip_link(owner, job_id, prefix):
    return html.A("Download the results (zip)", id="batch-zip-link",
                  href=zip_url(owner, job_id, prefix), download="batch_results.zip")


def run_outputs(services, session_id, history, source, *, browser_id=None, set_progress=None,
                prefix="/", backend=None, on_start=None, series=None):
    """Outputs of the run callback: (table, summary, download link, message).

    A batch that cannot start leaves the previous batch's table and zip link as they were.
    """
    try:
        owner = batch_owner(services, session_id, browser_id)
        result = run_batch(services, session_id, history, source, owner=owner,
                           set_progress=set_progress, backend=backend, on_start=on_start,
                           series=series)
    except Exception as exc:
        if isinstance(exc, InputError):
            text = f"Batch not started: {exc}"
        else:
            log.exception("batch failed")
            text = f"Batch failed: unexpected error ({type(exc).__name__})."
        if set_progress is not None:
            set_progress((0, 1, ""))
        return no_update, no_update, no_update, message_children(text, "error")
    link = _zip_link(owner, result["job"], prefix) if result["zip"] else None
    level = "info" if result["state"] == "done" else "error"
    return (results_table(result["rows"]), result["message"], link,
            message_children(result["message"], level) if level == "error" else None)


def cancel_outputs(services, session_id, browser_id=None, job_id=None):
    """Outputs of the Cancel button: (message, table, summary, download link)."""
    try:
        owner = batch_owner(services, session_id, browser_id)
        outcome = cancel_batch(services.config, owner, job_id)
    except InputError as exc:
        return message_children(str(exc), "error"), no_update, no_update, no_update
    if outcome is None:
        return message_children("No batch is running.", "info"), no_update, no_update, no_update
    if outcome["state"] != "cancelled":
        return message_children(outcome["message"], "info"), no_update, no_update, no_update
    return (message_children(outcome["message"], "error"), results_table(outcome["rows"]),
            None, None)


def upload_outputs(services, session_id, browser_id, trigger, contents, filenames):
    """Outputs of the upload / clear controls: (staged names, message, cleared upload)."""
    config = services.config
    try:
        owner = batch_owner(services, session_id, browser_id)
        if trigger == ids.BATCH_CLEAR_UPLOADS:
            clear_uploads(config, owner)
            return [], message_children("Uploads cleared.", "info"), no_update
        if not contents:
            raise PreventUpdate
        names, problems = stage_uploads(config, owner, contents, filenames)
    except InputError as exc:
        return no_update, message_children(f"Upload refused: {exc}", "error"), None
    text = f"{len(names)} uploaded file{'s' if len(names) != 1 else ''} ready for the batch."
    if problems:
        return names, message_children(" ".join([text, "Refused:", *problems]), "error"), None
    return names, message_children(text, "info"), None


def _when(status) -> str:
    try:
        started = _dt.datetime.fromtimestamp(float(status["started_at"]))
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return "?"
    today = _dt.datetime.now().date()
    return started.strftime("%H:%M" if started.date() == today else "%Y-%m-%d %H:%M")


def _state_text(status) -> str:
    state, done, total = status.get("state"), status.get("done", 0), status.get("total", 0)
    if state == "running":
        return status.get("text") or f"running: {done} of {total} files done"
    if state == "done":
        return f"done: {status.get('message', '')}"
    return f"{state}: {status.get('message', '')}"


def jobs_children(config, owner, prefix="/"):
    """The list of the owner's running and recent batches (:func:`components.batch.jobs_list`).
    """
    rows = []
    for status in list_jobs(config, owner):
        rows.append({"job": status["job"], "when": _when(status),
                     "source": source_label(status.get("source")),
                     "state": status.get("state", "?"), "text": _state_text(status),
                     "href": (zip_url(owner, status["job"], prefix)
                              if status.get("state") == "done" and status.get("zip") else None)})
    return jobs_list(rows)


#: Outputs of :func:`attach_outputs`, in order.
ATTACH_OUTPUTS = (
    (ids.BATCH_JOBS, "children"), (ids.BATCH_JOB, "data"), (ids.BATCH_POLL, "disabled"),
    (ids.BATCH_PROGRESS, "value"), (ids.BATCH_PROGRESS, "max"),
    (ids.BATCH_PROGRESS_TEXT, "children"), (ids.BATCH_TABLE, "children"),
    (ids.BATCH_SUMMARY, "children"), (ids.BATCH_DOWNLOAD, "children"),
    (ids.BATCH_MESSAGE, "children"), (ids.BATCH_CANCEL, "disabled"),
)


def attach_outputs(services, session_id, browser_id, job_id=None, *, prefix="/"):
    """What the page shows of the owner's batches: on page load, and each tick of the poll.

    Without `job_id` (page load): the owner's latest job, re-attached if it runs (the poll
    starts), shown as it ended otherwise; with `job_id` (the poll): that job. Returns the
    values of :data:`ATTACH_OUTPUTS`: the jobs list, the job shown, whether the poll stops,
    progress (value, max, text), table, summary, zip link, message, Cancel disabled.

    Raises
    ------
    PreventUpdate
        Before the page has its browser id (local mode), or when there is nothing to show.
    """
    config = services.config
    if browser_id is None and not signin_enabled(config):
        raise PreventUpdate  # the page sets it first
    try:
        owner = batch_owner(services, session_id, browser_id)
    except InputError as exc:
        return (no_update,) * 9 + (message_children(str(exc), "error"), no_update)
    jobs = list_jobs(config, owner)
    listing = jobs_children(config, owner, prefix)
    status = None
    if job_id is not None:
        status = next((s for s in jobs if s["job"] == job_id), None)
    if status is None:
        running = [s for s in jobs if s.get("state") == "running"]
        status = running[0] if running else (jobs[0] if job_id is None and jobs else None)
    if status is None:
        return (listing, None, True) + (no_update,) * 7 + (True,)
    state, done, total = status.get("state"), status.get("done", 0), status.get("total", 1)
    rows = results_table(status.get("rows") or [])
    if state == "running":
        text = status.get("text") or progress_text(done, total, 0.0)
        return (listing, status["job"], False, done, total, text, rows,
                f"Batch of {source_label(status.get('source'))}, started at "
                f"{_when(status)}: running.", None, None, False)
    link = _zip_link(owner, status["job"], prefix) if state == "done" and status.get("zip") \
        else None
    message = status.get("message", "")
    text = progress_text(done, total, 0.0)
    return (listing, status["job"], True, done, total, text, rows, message, link,
            message_children(message, "error") if state != "done" else None, True)


TOO_LARGE_JS = """
function(contents, filenames) {
    if (!contents || !contents.length) { return window.dash_clientside.no_update; }
    let bytes = 0;
    for (const c of contents) { bytes += Math.floor((c.length - c.indexOf(',') - 1) * 3 / 4); }
    const limit = %(limit)d;
    if (bytes <= limit) { return window.dash_clientside.no_update; }
    const mb = function (b) { return (b / 1048576).toFixed(1); };
    return {namespace: 'dash_html_components', type: 'Div', props: {className: 'message-error',
        children: 'Upload refused: these ' + contents.length + ' files are ' + mb(bytes) +
                  ' MB together, one upload takes at most ' + mb(limit) + ' MB: upload ' +
                  'fewer files at a time, or put them in the data folder.'}};
}
"""


BROWSER_JS = """
function(_session, current) {
    // This browser's id: kept in localStorage by the dcc.Store (read here directly, so an
    // id stored by an earlier page is found before the store has loaded it); made when none.
    const ok = function (v) { return typeof v === 'string' && /^[0-9a-f]{32}$/.test(v); };
    let stored = null;
    try { stored = JSON.parse(window.localStorage.getItem('%(store)s')); } catch (e) {}
    if (ok(stored)) { return stored; }
    if (ok(current)) { return current; }
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return b.toString(16).padStart(2, '0'); }).join('');
}
"""


def register(app, services):
    """Wire the Batch tab, its background run, re-attaching after a reload and the route of
    the results zip."""
    config = services.config
    prefix = app.config.requests_pathname_prefix or "/"

    # One upload request carries every file dropped at once: over the app's HTTP limit it
    # is refused (413) before any callback; say so in the browser.
    app.clientside_callback(
        TOO_LARGE_JS % {"limit": config.max_bytes},
        Output(ids.BATCH_MESSAGE, "children", allow_duplicate=True),
        Input(ids.BATCH_UPLOAD, "contents"),
        State(ids.BATCH_UPLOAD, "filename"),
        prevent_initial_call=True,
    )

    # the browser's id, on every page load (the same one after a reload)
    app.clientside_callback(
        BROWSER_JS % {"store": ids.BATCH_BROWSER},
        Output(ids.BATCH_BROWSER, "data"),
        Input(ids.SESSION, "data"),
        State(ids.BATCH_BROWSER, "data"),
    )

    @app.callback(
        Output(ids.BATCH_SOURCE, "options"),
        Output(ids.BATCH_SOURCE, "value"),
        Input(ids.BATCH_BROWSER, "data"),
        Input(ids.BATCH_REFRESH, "n_clicks"),
        Input(ids.BATCH_UPLOADS, "data"),
        State(ids.SESSION, "data"),
        State(ids.BATCH_SOURCE, "value"),
    )
    def _sources(browser_id, _n, _uploads, session_id, value):
        if browser_id is None and not signin_enabled(config):
            raise PreventUpdate
        try:
            options = source_options(config, batch_owner(services, session_id, browser_id))
        except InputError:
            raise PreventUpdate from None
        values = [o["value"] for o in options]
        if ctx.triggered_id == ids.BATCH_UPLOADS and _uploads:
            return options, UPLOADS_SOURCE
        return options, value if value in values else ALL_FILES

    @app.callback(
        Output(ids.BATCH_UPLOADS, "data"),
        Output(ids.BATCH_MESSAGE, "children", allow_duplicate=True),
        Output(ids.BATCH_UPLOAD, "contents"),
        Input(ids.BATCH_UPLOAD, "contents"),
        Input(ids.BATCH_CLEAR_UPLOADS, "n_clicks"),
        State(ids.BATCH_UPLOAD, "filename"),
        State(ids.SESSION, "data"),
        State(ids.BATCH_BROWSER, "data"),
        prevent_initial_call=True,
    )
    def _uploads(contents, _n, filenames, session_id, browser_id):
        return upload_outputs(services, session_id, browser_id, ctx.triggered_id, contents,
                              filenames)

    @app.callback(
        Output(ids.BATCH_TABLE, "children"),
        Output(ids.BATCH_SUMMARY, "children"),
        Output(ids.BATCH_DOWNLOAD, "children"),
        Output(ids.BATCH_MESSAGE, "children"),
        Input(ids.BATCH_RUN, "n_clicks"),
        State(ids.SESSION, "data"),
        State(ids.HISTORY, "data"),
        State(ids.BATCH_SOURCE, "value"),
        State(ids.BATCH_BROWSER, "data"),
        State(ids.IMAGE, "data"),
        background=True,
        progress=[Output(ids.BATCH_PROGRESS, "value"), Output(ids.BATCH_PROGRESS, "max"),
                  Output(ids.BATCH_PROGRESS_TEXT, "children")],
        running=[(Output(ids.BATCH_RUN, "disabled"), True, False),
                 (Output(ids.BATCH_CANCEL, "disabled"), False, True)],
        cancel=[Input(ids.BATCH_CANCEL, "n_clicks")],
        interval=500,
        prevent_initial_call=True,
    )
    def _run(set_progress, n, session_id, history, source, browser_id, meta):
        if not n:
            raise PreventUpdate
        set_progress((0, 1, "starting…"))

        def started(job_id):
            # this page shows (and its Cancel stops) this job (the job runner keeps the last
            # set_props of a background job only: one call)
            set_props(ids.BATCH_JOB, {"data": job_id})

        return run_outputs(services, session_id, history, source, browser_id=browser_id,
                           set_progress=set_progress, prefix=prefix, on_start=started,
                           series=(meta or {}).get("series"))

    @app.callback(
        Output(ids.BATCH_MESSAGE, "children", allow_duplicate=True),
        Output(ids.BATCH_TABLE, "children", allow_duplicate=True),
        Output(ids.BATCH_SUMMARY, "children", allow_duplicate=True),
        Output(ids.BATCH_DOWNLOAD, "children", allow_duplicate=True),
        Input(ids.BATCH_CANCEL, "n_clicks"),
        State(ids.SESSION, "data"),
        State(ids.BATCH_BROWSER, "data"),
        State(ids.BATCH_JOB, "data"),
        prevent_initial_call=True,
    )
    def _cancel(n, session_id, browser_id, job_id):
        if not n:
            raise PreventUpdate
        return cancel_outputs(services, session_id, browser_id, job_id)

    attach = [Output(i, p, allow_duplicate=True) for i, p in ATTACH_OUTPUTS]

    @app.callback(*attach, Input(ids.BATCH_BROWSER, "data"), State(ids.SESSION, "data"),
                  prevent_initial_call=True)
    def _attach(browser_id, session_id):
        # page load: the owner's batches; a running one is re-attached (the poll starts)
        return attach_outputs(services, session_id, browser_id, prefix=prefix)

    @app.callback(*attach, Input(ids.BATCH_POLL, "n_intervals"), State(ids.SESSION, "data"),
                  State(ids.BATCH_BROWSER, "data"), State(ids.BATCH_JOB, "data"),
                  prevent_initial_call=True)
    def _poll(_n, session_id, browser_id, job_id):
        return attach_outputs(services, session_id, browser_id, job_id, prefix=prefix)

    @app.callback(Output(ids.BATCH_JOBS, "children", allow_duplicate=True),
                  Input(ids.BATCH_RUN, "disabled"), State(ids.SESSION, "data"),
                  State(ids.BATCH_BROWSER, "data"), prevent_initial_call=True)
    def _relist(_running, session_id, browser_id):
        # a batch of this page started or ended (Run is disabled while it runs): the list
        # shows it
        try:
            return jobs_children(config, batch_owner(services, session_id, browser_id), prefix)
        except InputError:
            raise PreventUpdate from None

    @app.server.route(f"/_pipex/batch/<owner>/<job_id>/{ZIP_NAME}")
    def _zip(owner, job_id):
        if not _JOB_RE.fullmatch(owner) or not _JOB_RE.fullmatch(job_id):
            abort(404)
        user = signed_in_as(app)
        if signin_enabled(config) and (not user or owner_key(f"user:{user}") != owner):
            abort(404)  # with sign-in on, a user's zips are served to that user only
        path = Path(config.state_dir) / BATCH_FOLDER / owner / job_id / ZIP_NAME
        if not path.is_file():
            abort(404)
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name="batch_results.zip", max_age=0)
