"""Pipeline Explorer: explore scikit-image pipelines in the browser.

``create_app()`` builds the Dash app; ``server`` (the Flask app, for gunicorn:
``gunicorn -c gunicorn.conf.py app:server``) is created on first access, so importing this
module does no work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dash
from flask import jsonify

from callbacks import batch as batch_callbacks
from callbacks import auth, register_all
from callbacks.jobs import background_manager
from callbacks.loading import ARRAY_SAMPLE
from callbacks.services import Services
from components.layout import page
from pipeline import io
from pipeline.config import Config
from pipeline.filters import FILTERS
from pipeline.measure import AVAILABLE_PROPERTIES
from pipeline.segmentation import SEGMENTERS

HERE = Path(__file__).resolve().parent


def create_app(config: Config | None = None, initial=None, session_id=None) -> dash.Dash:
    """Build the app.

    Parameters
    ----------
    config : Config, optional
        Settings; read from ``PIPEX_*`` environment variables by default.
    initial : pipeline.io.LoadedImage, optional
        An image offered (and loaded first) as the sample "array" (see :func:`explore`).
    session_id : str, optional
        The session of every page (:func:`explore`: the notebook's one user); by default
        each page gets a new one, bound to the signed-in user (``callbacks.auth``).
    """
    config = config or Config.from_env()
    services = Services.create(config, initial=initial)
    samples = ((ARRAY_SAMPLE,) if initial is not None else ()) + io.SAMPLE_NAMES
    app = dash.Dash(
        __name__,
        title="Pipeline Explorer",
        assets_folder=str(HERE / "assets"),
        update_title=None,
        serve_locally=True,
        # the one job runner (callbacks.jobs): diskcache in the state folder, or Celery
        background_callback_manager=background_manager(config),
    )
    # HTTP-level limit: an upload arrives base64-encoded (4/3) inside a JSON body.
    app.server.config["MAX_CONTENT_LENGTH"] = int(config.max_bytes * 4 / 3) + 2**20

    def layout():
        return auth.with_sign_out(app, page(
            session_id or auth.page_session_id(app),
            samples,
            io.list_data_files(config.data_dir),
            default_sample=ARRAY_SAMPLE if initial is not None else config.default_sample,
            max_upload_mb=config.max_upload_mb,
            filters=FILTERS,
            segmenters=SEGMENTERS,
            properties=AVAILABLE_PROPERTIES,
        ))

    app.layout = layout
    app._pipex_services = services  # for explore(); callbacks get it through register()
    register_all(app, services)
    batch_callbacks.register(app, services)  # the Batch tab (a background job)
    auth.register(app, services)  # sign-in (PIPEX_USERS_FILE); last: its hooks go around all

    @app.server.route("/health")
    def health():
        # where compute runs (never connects here: /health answers at once)
        return jsonify(status="ok", compute=services.compute.backend.status())

    @app.server.errorhandler(413)
    def too_large(_error):
        limit = config.max_upload_mb
        return jsonify(error=f"request too large: the upload limit is {limit:g} MB"), 413

    # Dash sets its server up on the first request and marks it done before its script
    # registry is filled: the concurrent first requests of a threaded worker then answered
    # 500 for the page's bundles, a blank page (plotly/dash#3971). Set it up now, before
    # the worker serves anything (tests/test_deploy.py fires 41 requests at fresh workers).
    with app.server.app_context():
        app._setup_server()

    logging.basicConfig(level=logging.INFO)
    return app


class Explorer:
    """Handle on an app opened by :func:`explore`: the recipe and labels, back in Python."""

    def __init__(self, app, image, image_id, session_id):
        self.app = app
        self.image = image
        self.image_id = image_id
        self.session_id = session_id  # the pages of explore()'s app all use this session

    @property
    def _store(self):
        return self.app._pipex_services.store

    def recipe(self) -> dict:
        """The recipe the user last set on the image in the browser (the defaults before)."""
        from pipeline import recipe as recipes
        from pipeline.segment import default_thresholds, intensity_scale

        found = self._store.latest_recipe(self.session_id, self.image_id)
        if found is not None:
            return found
        recipe = recipes.default_recipe(*default_thresholds(self.image))
        recipe["segmentation"]["params"]["intensity_scale"] = intensity_scale(self.image.dtype)
        return recipes.validate(recipe)

    def labels(self):
        """Label image of the current recipe (the same computation as the exported script)."""
        from pipeline import recipe as recipes

        return recipes.run(self.image, self.recipe()).labels

    def measurements(self):
        """Measurements table (``pipeline.measure.Measurements``) of the current recipe."""
        from pipeline import recipe as recipes

        return recipes.run(self.image, self.recipe()).measurements


def explore(image, *, name="array", state_dir=None, serve=True, mode="inline",
            host="127.0.0.1", port=8051) -> Explorer:
    """Open Pipeline Explorer on an array you already have, e.g. inline in Jupyter.

    Parameters
    ----------
    image : ndarray
        2D or 3D grayscale (or RGB) image.
    name : str
        Name shown in the app.
    state_dir : path, optional
        Folder of the app's store and cache (a temporary folder by default).
    serve : bool
        Start the server (``app.run(jupyter_mode=mode)``: in Jupyter it runs in the background
        and the app shows in the notebook).
    mode : {'inline', 'tab', 'external', 'jupyterlab'}
        Dash's Jupyter display mode.

    Returns
    -------
    Explorer
        ``.recipe()``, ``.labels()`` and ``.measurements()`` hand the result back to Python.
    """
    import tempfile

    import numpy as np

    from pipeline.io import LoadedImage, content_hash, validate_image

    array = validate_image(np.asarray(image))
    loaded = LoadedImage(array=array, name=name, notes=("Array handed over from Python.",))
    state = state_dir or tempfile.mkdtemp(prefix="pipex-explore-")
    from pipeline.store import new_session_id

    session_id = new_session_id()  # one user: every page shows the recipe .recipe() reads
    app = create_app(Config(state_dir=state), initial=loaded, session_id=session_id)
    app.server.config["PIPEX_ALLOW_FRAMING"] = True  # shown inline in the notebook's page
    explorer = Explorer(app, array, content_hash(array), session_id)
    if serve:
        app.run(jupyter_mode=mode, host=host, port=port)
    return explorer


def __getattr__(name):
    # PEP 562: `app.server` builds the app on first access (gunicorn), not at import.
    if name == "server":
        return create_app().server
    if name == "celery_app":  # `celery -A app:celery_app worker` (PIPEX_CELERY_BROKER set)
        return create_app()._background_manager.handle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["adduser"]:  # python -m app adduser NAME: see callbacks.auth.main
        sys.exit(auth.main(sys.argv[1:]))
    create_app().run(host="127.0.0.1", port=8050)
