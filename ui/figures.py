"""One look for every chart, on screen and exported.

Streamlit's theme hides small margins on screen, but an exported PNG/SVG/HTML keeps the
figure's own layout: with 10 px margins the y tick labels were cut off and the axis titles
overlapped them. Every chart goes through `styled`, which leaves room for ticks, titles and
the legend below the plot and lets plotly grow a margin when a label needs more.
"""

from __future__ import annotations

import copy

import plotly.graph_objects as go
import plotly.io as pio

# The app's look as plotly's process-wide default: a figure then takes the template by
# reference when it is serialised, where naming it in update_layout validated and copied all
# of it per figure (33 ms of the 57 ms `styled` took; bench/interaction_latency.py)
pio.templates.default = "plotly_white"
MARGIN = {"l": 70, "r": 30, "t": 60, "b": 60}
FONT = {"family": "Source Sans Pro, Arial, sans-serif", "size": 13}


def styled(fig: go.Figure, title: str, x: str = "", y: str = "", height: int = 360,
           legend: bool = True) -> go.Figure:
    """Title, axis titles, height and margins that keep every label inside the image; the
    legend sits under the plot, left-aligned."""
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        xaxis_title=x, yaxis_title=y, height=height, margin=MARGIN, font=FONT,
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0, "xanchor": "left"})
    fig.update_xaxes(automargin=True, title_standoff=8)
    fig.update_yaxes(automargin=True, title_standoff=8)
    return fig


def marked(base: dict, traces: list[dict] = (), shapes: list[dict] = (),
           annotations: list[dict] = (), opacity: float | None = None) -> go.Figure:
    """A figure from a built figure's dict (fig.to_dict()) plus traces, shapes and annotations,
    without plotly's validation: what a slider moves (a line, a marker) on a chart built once,
    in ~1 ms instead of the ~60-90 ms of building and styling the whole figure again.
    `opacity` sets the base traces' marker opacity (fading them under a highlight)."""
    spec = copy.deepcopy(base)
    if opacity is not None:
        for trace in spec.get("data", []):
            trace.setdefault("marker", {})["opacity"] = opacity
    spec["data"] = [*spec.get("data", []), *traces]
    layout = spec.setdefault("layout", {})
    layout["shapes"] = [*layout.get("shapes", []), *shapes]
    layout["annotations"] = [*layout.get("annotations", []), *annotations]
    return go.Figure(spec, _validate=False)


def vline(x: float, text: str, dash: str = "dash", colour: str = "black",
          low: float = 0.0, high: float = 1.0) -> tuple[dict, dict]:
    """A vertical line over the whole plot height at x and its label at the top, inside the
    plot (as add_vline draws them), as a shape and an annotation for `marked`."""
    left = inside_label_position(x, low, high) == "top left"
    shape = {"type": "line", "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1,
             "yref": "y domain", "line": {"dash": dash, "color": colour}}
    note = {"x": x, "xref": "x", "y": 1, "yref": "y domain", "text": text,
            "showarrow": False, "xanchor": "right" if left else "left", "yanchor": "top"}
    return shape, note


def inside_label_position(x: float, low: float = 0.0, high: float = 1.0) -> str:
    """Where a vertical line's label stays inside the plot: to the left of a line near the
    right edge, to its right elsewhere."""
    return "top left" if x > low + 0.6 * (high - low) else "top right"


def rolling_lines(curves, group: str, window: int, digits: int = 4) -> go.Figure:
    """One line per `group` value of a long frame (step, value), each smoothed by a rolling
    mean of `window` steps (training curves); the caller styles it."""
    fig = go.Figure()
    for name, part in curves.groupby(group, sort=False):
        smooth = part["value"].rolling(window, min_periods=1).mean()
        fig.add_trace(go.Scatter(x=part["step"], y=smooth, mode="lines", name=name,
                                 hovertemplate=f"step %{{x}}: %{{y:.{digits}f}}"
                                               f"<extra>{name}</extra>"))
    return fig
