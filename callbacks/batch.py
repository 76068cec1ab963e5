"""The Batch tab: the current recipe over a folder of the data folder or several uploads.

The run is a Dash background callback (the app's job runner, :mod:`callbacks.jobs`): it runs
in its own process, reports its progress (files done / total, the files in progress, the time
left) and is cancelled by the Cancel button (the manager kills the job's process and its
workers; the job also stops between files when it sees its ``cancel`` flag). The work itself
is the batch of ``python -m pipeline run`` (:mod:`pipeline.cli`): each image read here (size
checked before it is read, pixels checked from its header before it is decoded), run by the
parallel backend (:func:`pipeline.parallel.map_items`, local processes or the dask scheduler
of ``PIPEX_DASK_ADDRESS``), a file that fails listed with its reason while the others go on.

Everything a job writes is under ``<state_dir>/batch/<session>/<job>/`` (shared by the
workers): ``status.json`` (state, pid, files done, rows), each file's outputs as they finish
(written complete or not at all), and at the end ``results.zip`` with a label TIFF and a
measurements CSV per image, the combined ``measurements.csv`` (a row per object, a summary
row per image), ``recipe.json`` and ``pipeline.py`` (the exported script). Only a finished
job has a zip: a cancelled or killed job never offers half its results as done. A new run
removes the session's earlier jobs. Uploads are staged in ``<state_dir>/batch/<session>/
uploads/``.

Callback bodies are module-level functions taking plain values (tests call them directly).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from dash import Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate
from flask import abort, send_file

from components import ids
from components.batch import results_table
from pipeline import cli as _cli  # the batch of `python -m pipeline run`, reused as it is
from pipeline import io, measure, parallel
from pipeline import recipe as recipes
from pipeline.errors import InputError
from pipeline.provenance import library_versions
from pipeline.script import to_script
from pipeline.store import check_session_id

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
COMMAND = "Pipeline Explorer Batch tab"


# --------------------------------------------------------------------------------------------
# Where things are


def session_dir(config, session_id) -> Path:
    """``<state_dir>/batch/<session>``: this session's batch jobs and uploads."""
    return Path(config.state_dir) / BATCH_FOLDER / check_session_id(session_id)


def job_dir(config, session_id, job_id) -> Path:
    """The folder of one job of a session.

    Raises
    ------
    InputError
        If `session_id` or `job_id` is malformed (32 hex digits each).
    """
    if not isinstance(job_id, str) or not _JOB_RE.fullmatch(job_id):
        raise InputError(f"job_id must be 32 hex digits, got {job_id!r}")
    return session_dir(config, session_id) / job_id


def zip_url(session_id, job_id, prefix="/") -> str:
    """Address of a finished job's zip (served by the route :func:`register` adds)."""
    return f"{prefix.rstrip('/')}/_pipex/batch/{session_id}/{job_id}/{ZIP_NAME}"


def _write_json(path: Path, data) -> None:
    _cli._write_atomic(path, json.dumps(data))


def read_status(config, session_id, job_id=None) -> dict | None:
    """The status of a job (the session's latest when `job_id` is None), or None."""
    try:
        if job_id is None:
            job_id = (session_dir(config, session_id) / "latest").read_text().strip()
        return json.loads((job_dir(config, session_id, job_id) / STATUS_NAME).read_text())
    except (OSError, ValueError, InputError):
        return None


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


def upload_dir(config, session_id) -> Path:
    """Folder of this session's staged uploads."""
    return session_dir(config, session_id) / UPLOADS_FOLDER


def staged_uploads(config, session_id) -> list[str]:
    """Names of this session's staged uploads, sorted."""
    try:
        folder = upload_dir(config, session_id)
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


def stage_uploads(config, session_id, contents, filenames) -> tuple[list[str], list[str]]:
    """Keep uploaded files for a batch of this session (a file of the same name is replaced).

    Only the size is checked here (a file that cannot be decoded is listed with its reason
    when the batch runs).

    Parameters
    ----------
    config : pipeline.config.Config
    session_id : str
    contents, filenames : list of str
        ``dcc.Upload(multiple=True)``'s ``contents`` and ``filename``.

    Returns
    -------
    names : list of str
        The session's staged uploads now.
    problems : list of str
        One message per refused file.
    """
    folder = upload_dir(config, session_id)
    if isinstance(contents, str):
        contents, filenames = [contents], [filenames]
    if not isinstance(contents, list):
        raise InputError("the upload is malformed: expected a list of files.")
    filenames = filenames if isinstance(filenames, list) else [None] * len(contents)
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for data_url, filename in zip(contents, filenames):
        name = _upload_name(filename)
        have = staged_uploads(config, session_id)
        if name not in have and len(have) >= config.max_batch_files:
            problems.append(f"{name}: a batch takes at most {config.max_batch_files} files "
                            "(PIPEX_MAX_BATCH_FILES).")
            continue
        try:
            _cli._write_atomic(folder / name, _upload_bytes(data_url, name, config.max_bytes))
        except InputError as exc:
            problems.append(f"{name}: {exc}")
        except OSError as exc:
            problems.append(f"{name}: could not be kept on the server ({exc.strerror or exc}).")
    return staged_uploads(config, session_id), problems


def clear_uploads(config, session_id) -> None:
    """Forget this session's staged uploads."""
    shutil.rmtree(upload_dir(config, session_id), ignore_errors=True)


def source_options(config, session_id) -> list[dict]:
    """Options of the source dropdown: all files, each folder, the uploads (with counts)."""
    files = io.list_data_files(config.data_dir)
    options = [{"label": f"All files of the data folder ({len(files)})", "value": ALL_FILES}]
    for folder in data_folders(config.data_dir, files):
        count = sum(f.startswith(folder + "/") for f in files)
        options.append({"label": f"{folder}/ ({count})", "value": DATA_PREFIX + folder})
    uploads = staged_uploads(config, session_id)
    options.append({"label": f"Uploaded files ({len(uploads)})", "value": UPLOADS_SOURCE})
    return options


def batch_inputs(config, session_id, source) -> list[tuple[str, Path]]:
    """The files of a batch: (name shown, path), at most ``config.max_batch_files``.

    Parameters
    ----------
    source : str
        ``"data:"`` (all files of the data folder), ``"data:<folder>"``, or ``"uploads"``.

    Raises
    ------
    InputError
        If the source is unknown or refused, has no image, or too many.
    """
    if source == UPLOADS_SOURCE:
        names = staged_uploads(config, session_id)
        if not names:
            raise InputError("No uploaded files: upload images first, or choose a folder of "
                             "the data folder.")
        if len(names) > config.max_batch_files:
            raise InputError(f"{len(names)} uploaded files, the most one batch takes is "
                             f"{config.max_batch_files} (PIPEX_MAX_BATCH_FILES).")
        folder = upload_dir(config, session_id)
        return [(name, folder / name) for name in names]
    if isinstance(source, str) and source.startswith(DATA_PREFIX):
        return folder_files(config.data_dir, source[len(DATA_PREFIX):], config.max_batch_files)
    raise InputError("Choose the images: a folder of the data folder, or the uploaded files.")


def batch_recipe(store, session_id, history) -> dict:
    """The page's current recipe, read from the server's undo history and validated.

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
    return recipes.validate(recipe)


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


def _forget_old_jobs(config, session_id, keep=()) -> None:
    """Remove the session's earlier jobs (their zips were offered; disk stays bounded)."""
    root = session_dir(config, session_id)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_dir() and _JOB_RE.fullmatch(entry.name) and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


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


def run_batch(services, session_id, history, source, *, set_progress=None, backend=None,
              job_id=None) -> dict:
    """Run the page's current recipe over a batch of images; pack the results in a zip.

    Parameters
    ----------
    services : callbacks.services.Services
    session_id : str
    history : dict
        The page's history pointer (the current recipe is read from the server's store).
    source : str
        See :func:`batch_inputs`.
    set_progress : callable, optional
        ``set_progress((done, total, text))``: Dash's progress setter.
    backend : pipeline.parallel.Backend, optional
        Default: the config's (``PIPEX_JOBS`` / ``PIPEX_DASK_ADDRESS``) with local processes,
        as ``python -m pipeline run``.
    job_id : str, optional
        32 hex digits (a new one by default).

    Returns
    -------
    dict
        ``job``, ``state`` (``"done"``, ``"cancelled"`` or ``"failed"``: no file could be
        processed), ``rows`` (per file: ``file``, ``regions``, ``status`` = ``ok`` / ``failed``
        / ``cancelled``, ``message``), ``message``, ``zip`` (path of the zip, or None).

    Raises
    ------
    InputError
        Before any work: no recipe, a refused source, too many files.
    """
    config = services.config
    recipe = batch_recipe(services.store, session_id, history)
    inputs = batch_inputs(config, session_id, source)
    job_id = job_id or uuid.uuid4().hex
    folder = job_dir(config, session_id, job_id)
    _forget_old_jobs(config, session_id)
    sweep_old(config)
    folder.mkdir(parents=True, exist_ok=True)
    _cli._write_atomic(session_dir(config, session_id) / "latest", job_id)

    n = len(inputs)
    shown = [name for name, _ in inputs]
    stems = [stem for _, stem in _cli._output_names([path for _, path in inputs])]
    rows: list = [None] * n
    values: list = [None] * n
    in_progress: dict = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    status = {"job": job_id, "state": "running", "pid": os.getpid(), "source": source,
              "total": n, "done": 0, "started": _now(), "rows": []}

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
        if set_progress is not None:
            set_progress((done, n, text))
        save_status(done=done, text=text)

    def items():
        for i, (_, path) in enumerate(inputs):
            data = _cli._read_bytes(path, config.max_bytes)  # size checked before reading
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
                "versions": library_versions()}
        try:
            _cli._write_atomic(folder / f"{stems[index]}_labels.tif", value["tiff"])
            _cli._write_atomic(folder / f"{stems[index]}_measurements.csv",
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
    own = backend is None
    backend = parallel.Backend.from_config(config, prefer="processes") if own else backend
    try:
        _, run = parallel.map_items(
            _cli._ProcessImage(recipe, config.max_bytes, config.max_pixels), items(), total=n,
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
    combined = measure.to_csv(_cli._combine(tables, summaries), info)
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
                archive.write(path, path.name)
                packed.append(path)
        archive.writestr("measurements.csv", combined)
        archive.writestr("recipe.json", recipes.dumps(recipe))
        archive.writestr("pipeline.py", script)
    target = folder / ZIP_NAME
    os.replace(part, target)
    for path in packed:
        path.unlink(missing_ok=True)
    return target


def cancel_batch(config, session_id) -> dict | None:
    """Ask the session's running batch to stop; what it had done (None if no batch ran).

    The job stops before its next file when it sees the flag (the job runner also kills its
    process). Returns ``{"state", "rows", "message"}``.
    """
    status = read_status(config, session_id)
    if status is None:
        return None
    if status.get("state") != "running":
        return {"state": status.get("state"), "rows": status.get("rows", []),
                "message": "The batch had already finished."}
    try:
        (job_dir(config, session_id, status["job"]) / CANCEL_FLAG).touch()
    except (OSError, InputError, KeyError):
        log.warning("could not flag the batch for cancelling", exc_info=True)
    done = status.get("done", 0)
    return {"state": "cancelled", "rows": status.get("rows", []),
            "message": f"Cancelled after {done} of {status.get('total', '?')} files: nothing "
                       "was packed (a zip is made only when every file has run)."}


# --------------------------------------------------------------------------------------------
# Callback outputs


def run_outputs(services, session_id, history, source, *, set_progress=None, prefix="/",
                backend=None):
    """Outputs of the run callback: (table, summary, download link, message).

    A batch that cannot start leaves the previous batch's table and zip link as they were.
    """
    try:
        result = run_batch(services, session_id, history, source, set_progress=set_progress,
                           backend=backend)
    except Exception as exc:  # noqa: BLE001 - the page must stay usable
        if isinstance(exc, InputError):
            text = f"Batch not started: {exc}"
        else:
            log.exception("batch failed")
            text = f"Batch failed: unexpected error ({type(exc).__name__})."
        if set_progress is not None:
            set_progress((0, 1, ""))
        return no_update, no_update, no_update, message_children(text, "error")
    link = None
    if result["zip"]:
        link = html.A("Download the results (zip)", id="batch-zip-link",
                      href=zip_url(session_id, result["job"], prefix),
                      download="batch_results.zip")
    level = "info" if result["state"] == "done" else "error"
    return (results_table(result["rows"]), result["message"], link,
            message_children(result["message"], level) if level == "error" else None)


def cancel_outputs(config, session_id):
    """Outputs of the Cancel button: (message, table, summary, download link)."""
    try:
        outcome = cancel_batch(config, session_id)
    except InputError as exc:
        return message_children(str(exc), "error"), no_update, no_update, no_update
    if outcome is None:
        return message_children("No batch is running.", "info"), no_update, no_update, no_update
    if outcome["state"] != "cancelled":
        return message_children(outcome["message"], "info"), no_update, no_update, no_update
    return (message_children(outcome["message"], "error"), results_table(outcome["rows"]),
            None, None)


def upload_outputs(config, session_id, trigger, contents, filenames):
    """Outputs of the upload / clear controls: (staged names, message, cleared upload)."""
    try:
        if trigger == ids.BATCH_CLEAR_UPLOADS:
            clear_uploads(config, session_id)
            return [], message_children("Uploads cleared.", "info"), no_update
        if not contents:
            raise PreventUpdate
        names, problems = stage_uploads(config, session_id, contents, filenames)
    except InputError as exc:
        return no_update, message_children(f"Upload refused: {exc}", "error"), None
    text = f"{len(names)} uploaded file{'s' if len(names) != 1 else ''} ready for the batch."
    if problems:
        return names, message_children(" ".join([text, "Refused:", *problems]), "error"), None
    return names, message_children(text, "info"), None


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


def register(app, services):
    """Wire the Batch tab, its background run and the route of the results zip."""
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

    @app.callback(
        Output(ids.BATCH_SOURCE, "options"),
        Output(ids.BATCH_SOURCE, "value"),
        Input(ids.SESSION, "data"),
        Input(ids.BATCH_REFRESH, "n_clicks"),
        Input(ids.BATCH_UPLOADS, "data"),
        State(ids.BATCH_SOURCE, "value"),
    )
    def _sources(session_id, _n, _uploads, value):
        try:
            options = source_options(config, session_id)
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
        prevent_initial_call=True,
    )
    def _uploads(contents, _n, filenames, session_id):
        return upload_outputs(config, session_id, ctx.triggered_id, contents, filenames)

    @app.callback(
        Output(ids.BATCH_TABLE, "children"),
        Output(ids.BATCH_SUMMARY, "children"),
        Output(ids.BATCH_DOWNLOAD, "children"),
        Output(ids.BATCH_MESSAGE, "children"),
        Input(ids.BATCH_RUN, "n_clicks"),
        State(ids.SESSION, "data"),
        State(ids.HISTORY, "data"),
        State(ids.BATCH_SOURCE, "value"),
        background=True,
        progress=[Output(ids.BATCH_PROGRESS, "value"), Output(ids.BATCH_PROGRESS, "max"),
                  Output(ids.BATCH_PROGRESS_TEXT, "children")],
        running=[(Output(ids.BATCH_RUN, "disabled"), True, False),
                 (Output(ids.BATCH_CANCEL, "disabled"), False, True)],
        cancel=[Input(ids.BATCH_CANCEL, "n_clicks")],
        interval=500,
        prevent_initial_call=True,
    )
    def _run(set_progress, n, session_id, history, source):
        if not n:
            raise PreventUpdate
        set_progress((0, 1, "starting…"))
        return run_outputs(services, session_id, history, source, set_progress=set_progress,
                           prefix=prefix)

    @app.callback(
        Output(ids.BATCH_MESSAGE, "children", allow_duplicate=True),
        Output(ids.BATCH_TABLE, "children", allow_duplicate=True),
        Output(ids.BATCH_SUMMARY, "children", allow_duplicate=True),
        Output(ids.BATCH_DOWNLOAD, "children", allow_duplicate=True),
        Input(ids.BATCH_CANCEL, "n_clicks"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _cancel(n, session_id):
        if not n:
            raise PreventUpdate
        return cancel_outputs(config, session_id)

    @app.server.route(f"/_pipex/batch/<session_id>/<job_id>/{ZIP_NAME}")
    def _zip(session_id, job_id):
        try:
            path = job_dir(config, session_id, job_id) / ZIP_NAME
        except InputError:
            abort(404)
        if not path.is_file():
            abort(404)
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name="batch_results.zip", max_age=0)
