"""Layer 3, runtime: training off the kernel's main thread (:class:`Runner`: a trainer thread and a renderer, at
most ``fps`` frames a second), the one drawing loop (:class:`DrawThread`: latest-frame mailbox, draw thread,
errors shown on it, idle exit) and the time-budget throttle the monitor uses. Knows nothing of widgets: it
hands frames to callbacks.

Every thread gradwidgets starts, and what it may write (a widget not listed for a thread is not written by it):

==============================  =================================  ==============================================
thread (name)                   started by                         writes
==============================  =================================  ==============================================
``<app>-trainer``               ``Runner`` (Playground, Compare)   no widget: steps and rebuilds the session
                                                                   (``reconfigure`` lands under its lock), the
                                                                   forward row's hooks; builds frames
``<app>-renderer``              ``Runner``, a ``DrawThread``       every chart, banner, readout, the loss curve,
                                                                   heatmap, transport status, scrubber range and
                                                                   forward row text of the app; the error banner
``gradwidgets-monitor``         ``GradientMonitor``, a             the monitor's bars, banner and loss curve;
                                ``DrawThread`` (ends when idle)    reads a last step the loop left unread
the user's loop                 calls ``monitor.update()``         no widget, except the monitor's banner to show
                                                                   an error of ``update()`` at once (banner lock)
``<app>-watchdog``              ``RunnerApp`` (apps/lifecycle)     only ``unwatched_notice``; pauses the runner
``gradwidgets-run-viewer``      ``RunViewer``                      every chart, banner and the scrubber range of
                                                                   the viewer
``gradwidgets-server-log``      ``gradwidgets serve`` supervisor   no widget: forwards the server's log lines
the kernel's main thread        Jupyter (widget callbacks)         the inputs the user touched (controls,
                                                                   toggles, scrubber, follow) and the bars' hover
                                                                   box (under the bars' lock); a standalone
                                                                   ``GradientBars`` (RunViewer's) redraws itself
                                                                   on a toggle. An app's bars ask their draw
                                                                   thread for a frame instead (``on_redraw``)
==============================  =================================  ==============================================

Constructors write their widgets' first state on the thread that builds them, before any of these threads
starts. A widget written by two threads (a bars view: draw thread and hover; a banner: draw thread and the
user's loop) serialises them with its own lock, so a message never mixes two states.
"""

from __future__ import annotations

from .draw import DrawThread
from .runner import DEFAULT_FPS, MAX_FPS, Runner
from .throttle import BudgetThrottle

__all__ = ["DEFAULT_FPS", "MAX_FPS", "BudgetThrottle", "DrawThread", "Runner"]
