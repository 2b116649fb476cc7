"""Matplotlib backend of the sandboxes: renders with Agg; show() hands figures to the runner.

Selected by MPLBACKEND=module://code_exec_mpl_backend. As in a notebook, show() emits the open
figures as PNG and closes them; figures still open when a run ends are emitted too.
"""

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg

FigureCanvas = FigureCanvasAgg

_captured: list[bytes] = []


def _capture_open_figures() -> None:
    import matplotlib.pyplot as plt

    for num in plt.get_fignums():
        fig = plt.figure(num)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        _captured.append(buffer.getvalue())
    plt.close("all")


def show(*args: object, **kwargs: object) -> None:
    """Emit every open figure as a PNG and close it."""
    _capture_open_figures()


def drain() -> list[bytes]:
    """PNGs shown during the run plus figures left open; clears the list."""
    _capture_open_figures()
    images = list(_captured)
    _captured.clear()
    return images
