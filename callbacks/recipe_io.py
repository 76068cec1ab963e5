"""The recipe tab: view, save and load the recipe, export it as a Python script."""

from __future__ import annotations

from dash import Input, Output, State, dcc
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import provenance
from pipeline import recipe as recipes
from pipeline.script import to_script

from .downloads import file_stem
from .params import current_recipe


def shown_recipe(meta, history):
    """The current recipe, reading the image series shown (a data-folder TIFF's Series menu:
    ``meta["series"]``) so that the saved recipe, the script and a batch read that series."""
    return recipes.with_series(current_recipe(history), (meta or {}).get("series"))


def recipe_file(meta, history):
    """(JSON text, filename) of the current recipe."""
    return recipes.dumps(shown_recipe(meta, history)), f"{file_stem(meta)}_recipe.json"


def script_file(meta, history):
    """(Python source, filename) of a script reproducing the current recipe."""
    recipe = shown_recipe(meta, history)
    info = provenance.record(meta, {"recipe": recipe})
    return to_script(recipe, info), f"{file_stem(meta)}_pipeline.py"


def register(app, services):
    """Wire the recipe tab."""
    del services

    @app.callback(
        Output(ids.DOWNLOAD_RECIPE, "data"),
        Input(ids.SAVE_RECIPE_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        prevent_initial_call=True,
    )
    def _save(n, meta, history):
        if not n or not history:
            raise PreventUpdate
        text, name = recipe_file(meta, history)
        return dcc.send_string(text, name)

    @app.callback(
        Output(ids.DOWNLOAD_SCRIPT, "data"),
        Input(ids.EXPORT_SCRIPT_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        prevent_initial_call=True,
    )
    def _export(n, meta, history):
        if not n or not history or not meta:
            raise PreventUpdate
        text, name = script_file(meta, history)
        return dcc.send_string(text, name)
