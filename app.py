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

from callbacks import register_all
from callbacks.services import Services
from components.layout import page
from pipeline import io
from pipeline.config import Config
from pipeline.store import new_session_id

HERE = Path(__file__).resolve().parent


def create_app(config: Config | None = None) -> dash.Dash:
    """Build the app.

    Parameters
    ----------
    config : Config, optional
        Settings; read from ``PIPEX_*`` environment variables by default.
    """
    config = config or Config.from_env()
    services = Services.create(config)
    app = dash.Dash(
        __name__,
        title="Pipeline Explorer",
        assets_folder=str(HERE / "assets"),
        update_title=None,
        serve_locally=True,
    )
    # HTTP-level limit: an upload arrives base64-encoded (4/3) inside a JSON body.
    app.server.config["MAX_CONTENT_LENGTH"] = int(config.max_bytes * 4 / 3) + 2**20

    def layout():
        return page(
            new_session_id(),
            io.SAMPLE_NAMES,
            io.list_data_files(config.data_dir),
            default_sample=config.default_sample,
            max_upload_mb=config.max_upload_mb,
            mode_default="cg_mg",
        )

    app.layout = layout
    register_all(app, services)

    @app.server.route("/health")
    def health():
        return jsonify(status="ok")

    @app.server.errorhandler(413)
    def too_large(_error):
        limit = config.max_upload_mb
        return jsonify(error=f"request too large: the upload limit is {limit:g} MB"), 413

    logging.basicConfig(level=logging.INFO)
    return app


def __getattr__(name):
    # PEP 562: `app.server` builds the app on first access (gunicorn), not at import.
    if name == "server":
        return create_app().server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=8050)
