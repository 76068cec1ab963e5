"""The exact result of a large image as a background job vs inside the request (issue 9).

Serves the app with gunicorn as the Dockerfile does (``gunicorn -c gunicorn.conf.py
app:server``, 2 workers × 2 threads, on 127.0.0.1:8140-8159) twice: with
``PIPEX_JOB_AFTER_S=1`` (a random walker expected over 1 s runs as a job) and with
``PIPEX_JOB_AFTER_S=3599`` (never: the exact result is computed inside the settle request,
as before). In headless Chromium (the browser tests' flags) on a noisy ``N``² camera from
the data folder, per mode:

* **load → exact drawn**: the file chosen in the loader → the segmentation summary says
  "labelled region" and not "preview" (the reduced-grid preview comes first either way);
* **key press → exact drawn**: ArrowRight on the vmax handle, ``--moves`` times;
* job mode only, **cancel latency**: another image of the same size chosen (its job builds
  a graph: seconds), the progress bar shown, ``--cancel-after`` seconds later a click on
  Cancel → the job's process (a grandchild of gunicorn's master) is gone; the server's CPU
  before and over the second after.

Usage: ``.venv/bin/python bench/bench_exact_job.py [--size 2048] [--moves 3]``; prints a
JSON summary (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from skimage import data as skdata
from skimage.transform import resize

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLAGS = ("--headless=new", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic",
         "--window-size=1600,1000", "--force-device-scale-factor=1",
         "--disable-dev-shm-usage", "--no-sandbox", "--disable-gpu")


def noisy_camera(n):
    rng = np.random.default_rng(9)
    image = resize(skdata.camera() / 255.0, (n, n), order=1)
    return (np.clip(image + rng.normal(0, 0.08, image.shape), 0, 1) * 255).astype(np.uint8)


def until(predicate, timeout=300, interval=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("timed out")


def serve(port, state, data, job_after_s):
    env = {**os.environ, "PIPEX_BIND": f"127.0.0.1:{port}", "PIPEX_WORKERS": "2",
           "PIPEX_THREADS": "2", "PIPEX_STATE_DIR": str(state), "PIPEX_DATA_DIR": str(data),
           "PIPEX_JOB_AFTER_S": str(job_after_s)}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = subprocess.Popen([gunicorn, "-c", "gunicorn.conf.py", "app:server"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: _health(port), timeout=120, interval=0.2)
    except TimeoutError:
        proc.terminate()
        raise
    return proc


def _health(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
    except requests.RequestException:
        return False


def jobs(server):
    """Job processes: children of gunicorn's workers (the master's grandchildren)."""
    out = []
    for worker in psutil.Process(server.pid).children():
        for child in worker.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    out.append(child)
            except psutil.NoSuchProcess:
                pass
    return out


def server_cpu(server, interval=1.0):
    """CPU seconds the whole server (master, workers, jobs) used over `interval`."""
    def total():
        s = 0.0
        procs = [psutil.Process(server.pid)] + psutil.Process(server.pid).children(True)
        for p in procs:
            try:
                s += sum(p.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return s
    before = total()
    time.sleep(interval)
    return total() - before


def summary(driver):
    found = driver.find_elements(By.ID, "segmentation-summary")
    return found[0].text if found else ""


def exact(driver):
    text = summary(driver)
    return "labelled region" in text and "preview" not in text


def run_mode(args, mode, job_after_s, port, folder):
    state = folder / f"state-{mode}"
    if _health(port):
        raise SystemExit(f"port {port} is taken by another server")
    server = serve(port, state, folder / "data", job_after_s)
    options = Options()
    options.binary_location = args.chromium
    for flag in FLAGS:
        options.add_argument(flag)
    driver = None
    out = {"mode": mode, "PIPEX_JOB_AFTER_S": job_after_s}
    try:
        driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        driver.get(f"http://127.0.0.1:{port}/")
        until(lambda: exact(driver), timeout=180)
        driver.find_element(By.ID, "data-file-dropdown").click()
        options_ = until(lambda: driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option"))
        t0 = time.monotonic()
        next(o for o in options_ if o.text == "large.png").click()
        until(lambda: "large.png" in driver.find_element(By.ID, "image-info").text)
        until(lambda: "preview" in summary(driver))
        out["load_preview_s"] = time.monotonic() - t0
        until(lambda: exact(driver), timeout=args.timeout)
        out["load_exact_s"] = time.monotonic() - t0
        moves = []
        for _ in range(args.moves):
            time.sleep(2.0)  # idle (the comparison and the table settle)
            handle = driver.find_elements(By.CSS_SELECTOR, "#thresholds-slider [role=slider]")[1]
            t0 = time.monotonic()
            handle.send_keys(Keys.ARROW_RIGHT)
            until(lambda: not exact(driver), timeout=30)
            until(lambda: exact(driver), timeout=args.timeout)
            moves.append(time.monotonic() - t0)
        out["move_exact_s"] = moves
        out["move_exact_median_s"] = statistics.median(moves) if moves else None
        if job_after_s < 3599:
            # another image: its job builds a graph too (seconds), Cancel comes meanwhile
            time.sleep(2.0)
            driver.find_element(By.ID, "data-file-dropdown").click()
            options_ = until(lambda: driver.find_elements(By.CSS_SELECTOR,
                                                          ".dash-dropdown-option"))
            next(o for o in options_ if o.text == "other.png").click()
            until(lambda: driver.find_element(By.ID, "exact-job").value_of_css_property(
                "display") != "none", timeout=120)
            job = until(lambda: jobs(server), timeout=30)[0]
            time.sleep(args.cancel_after)
            out["cpu_before_cancel_s_per_s"] = server_cpu(server, 0.5) / 0.5
            t0 = time.monotonic()
            driver.find_element(By.ID, "exact-job-cancel").click()
            until(lambda: not psutil.pid_exists(job.pid) or
                  job.status() == psutil.STATUS_ZOMBIE, timeout=30, interval=0.005)
            out["cancel_latency_s"] = time.monotonic() - t0
            until(lambda: "cancelled" in driver.find_element(By.ID, "exact-job-message").text)
            out["cancel_message_s"] = time.monotonic() - t0
            out["cpu_after_cancel_s_per_s"] = server_cpu(server)
            out["preview_kept"] = "preview" in summary(driver)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--cancel-after", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--port", type=int, default=8140)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        Image.fromarray(noisy_camera(args.size)).save(folder / "data" / "large.png")
        Image.fromarray(noisy_camera(args.size)[::-1]).save(folder / "data" / "other.png")
        results = {"size": args.size, "load": os.getloadavg(),
                   "runs": [run_mode(args, "job", 1.0, args.port, folder),
                            run_mode(args, "in-request", 3599, args.port + 1, folder)]}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
