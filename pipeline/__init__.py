"""Pure compute package of Pipeline Explorer.

Plain numpy / scipy / scikit-image / joblib code: image I/O, the pipeline steps, the
server-side array store and the compute cache. Nothing here imports dash, flask or plotly.
"""

from .errors import InputError

__all__ = ["InputError"]
