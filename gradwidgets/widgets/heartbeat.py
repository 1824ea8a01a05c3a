"""``Heartbeat``: an invisible widget whose every *visible* front-end view ticks a counter every few seconds.

Why: a page that dies without unloading (browser killed, laptop lid closed, network gone) sends nothing, and a
training widget's own traffic keeps the kernel "active" for every idle culler. Only the front end can say that
someone is still looking, so each rendered view increments ``beat`` every ``interval`` seconds while its
document is visible; the app (:class:`gradwidgets.apps.lifecycle.RunnerApp`) pauses training when beats stop.

A few lines of anywidget, so it works unchanged in Voila, JupyterLab and Notebook 7 (no extension to build,
nothing fetched from the network: the module travels inside the widget's state). A hidden browser tab does not
beat (``document.hidden``): a class server's cores go to the tabs people look at. A view removed from the page
(JupyterLab tab closed, output cleared) stops its timer.
"""

from __future__ import annotations

import anywidget
import traitlets

__all__ = ["BEAT_INTERVAL_SECONDS", "Heartbeat"]

BEAT_INTERVAL_SECONDS = 5.0

_ESM = """
function render({ model, el }) {
  el.style.display = "none";
  const beat = () => {
    if (document.hidden) return;
    model.set("beat", (model.get("beat") || 0) + 1);
    model.save_changes();
  };
  beat();
  const timer = setInterval(beat, Math.max(250, 1000 * model.get("interval")));
  const onVisible = () => { if (!document.hidden) beat(); };
  document.addEventListener("visibilitychange", onVisible);
  return () => { clearInterval(timer); document.removeEventListener("visibilitychange", onVisible); };
}
export default { render };
"""


class Heartbeat(anywidget.AnyWidget):
    """Counts beats from the front end; ``on_beat(callback)`` is called (on the kernel's main thread) per beat."""

    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    beat = traitlets.Int(0).tag(sync=True)
    interval = traitlets.Float(BEAT_INTERVAL_SECONDS).tag(sync=True)

    def on_beat(self, callback: object) -> None:
        self.observe(lambda _change: callback(), "beat")  # type: ignore[operator]
