"""The naive baseline: the talk's Dash app, written the way the talk shows it.

Two sliders (vmin, vmax) and one callback ``update_figure(v_min, v_max)`` that, on every
slider move, builds the markers, calls ``skimage.segmentation.random_walker(img, mask,
mode='cg_mg')`` and sends back the whole figure: the image as a ``go.Heatmap`` and the
segmentation as a ``go.Contour``. No cache, no server-side state, no patching: every move
recomputes the random walker (graph Laplacian included) and re-sends the image.

The image is chosen by ``create_app(image)`` (an array), or for a server by the
``BASELINE_IMAGE`` environment variable / ``--image`` CLI argument: ``coins`` (default),
``camera1024`` (``data.camera()`` resized to 1024x1024, uint8; written once to a TIFF, see
:func:`camera_1024_tiff`), or the path of a 2D TIFF / PNG file.

Serve it like the app (``bench_http.py`` does)::

    BASELINE_IMAGE=coins gunicorn -w 1 -k gthread --threads 2 --chdir bench baseline_app:server
    python bench/baseline_app.py --image camera1024 --port 8051
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dash
import numpy as np
import plotly.graph_objs as go
from dash import Input, Output, dcc, html
from skimage import data, segmentation, transform

HERE = Path(__file__).resolve().parent
#: Where the 1024x1024 test image is written once (bench/results/ is git-ignored).
CAMERA_1024_TIFF = HERE / "results" / "camera_1024.tif"


def camera_1024() -> np.ndarray:
    """``skimage.data.camera()`` resized to 1024x1024, uint8 (the benchmark's large 2D image)."""
    big = transform.resize(data.camera(), (1024, 1024), preserve_range=True)
    return big.astype(np.uint8)


def camera_1024_tiff(path=CAMERA_1024_TIFF) -> Path:
    """Write :func:`camera_1024` to `path` as a TIFF unless it exists; return the path."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tifffile.imwrite(tmp, camera_1024())
        os.replace(tmp, path)
    return path


def load_image(name: str) -> np.ndarray:
    """The image named by `name`: ``coins``, ``camera1024`` or a file path (2D, grayscale)."""
    if name in ("", "coins"):
        return data.coins()
    if name in ("camera1024", "1024"):
        name = str(camera_1024_tiff())
    path = Path(name)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        from skimage import io as skio

        img = skio.imread(path, as_gray=True)
    if img.ndim != 2:
        raise ValueError(f"the baseline app shows 2D images only (Heatmap), got shape {img.shape}")
    return img


def create_app(image: np.ndarray) -> dash.Dash:
    """The talk's app for `image` (2D array)."""
    img = np.asarray(image)
    lo, hi = float(img.min()), float(img.max())
    span = hi - lo
    step = 1 if np.issubdtype(img.dtype, np.integer) else span / 1000

    app = dash.Dash(__name__, title="random walker (baseline)")
    app.layout = html.Div([
        dcc.Graph(id="graph"),
        html.Label("vmin"),
        dcc.Slider(id="vmin-slider", min=lo, max=hi, step=step, value=lo + span / 3),
        html.Label("vmax"),
        dcc.Slider(id="vmax-slider", min=lo, max=hi, step=step, value=lo + 2 * span / 3),
    ])

    @app.callback(Output("graph", "figure"),
                  [Input("vmin-slider", "value"), Input("vmax-slider", "value")])
    def update_figure(v_min, v_max):
        mask = np.zeros(img.shape, dtype=np.uint8)
        mask[img < v_min] = 1
        mask[img > v_max] = 2
        seg = segmentation.random_walker(img, mask, mode="cg_mg")
        return {"data": [
            go.Heatmap(z=img, colorscale="Greys"),
            go.Contour(z=seg, ncontours=1,
                       contours=dict(start=1.5, end=1.5, coloring="lines"),
                       line=dict(width=3)),
        ]}

    @app.server.route("/health")
    def health():
        return "ok"

    return app


def __getattr__(name):
    # PEP 562, like app.py: `baseline_app:server` builds the app when gunicorn asks for it.
    if name == "server":
        return create_app(load_image(os.environ.get("BASELINE_IMAGE", "coins"))).server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=os.environ.get("BASELINE_IMAGE", "coins"),
                        help="coins (default), camera1024, or a 2D image file")
    parser.add_argument("--port", type=int, default=8051)
    args = parser.parse_args(argv)
    create_app(load_image(args.image)).run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
