"""Nobody watching, nothing trains: a playing app pauses when its front-end heartbeat stops, says so, and
clears the notice when it plays again (recording comm, no browser; the browser tests do it for real)."""

from __future__ import annotations

import time

import pytest

import gradwidgets as gw
from gradwidgets.apps.lifecycle import UNWATCHED_NOTICE
from gradwidgets.testing import recording_comm, wait_until
from gradwidgets.widgets.heartbeat import Heartbeat

SMALL = dict(depth=4, width=8, batch_size=16, n_samples=128)


@pytest.fixture
def apps():
    made = []
    with recording_comm():

        def make(kind: str = "playground", **kwargs):
            if kind == "compare":
                app = gw.Compare([dict(depth=3, width=8), dict(depth=3, width=8, activation="relu")],
                                 batch_size=16, n_samples=128)
            else:
                app = gw.Playground(**{**SMALL, **kwargs})
            made.append(app)
            return app

        yield make
        for app in made:
            app.close()


def beat(app) -> None:
    """What a visible front-end view does every few seconds."""
    app.heartbeat.beat += 1


def test_heartbeat_and_notice_come_first_in_the_app(apps):
    pg = apps()
    assert isinstance(pg.children[1], Heartbeat) and pg.children[0] is pg.unwatched_notice
    assert pg.unwatched_notice.value == ""
    assert "document.hidden" in pg.heartbeat._esm  # hidden tabs do not beat: they pause too


@pytest.mark.parametrize("kind", ["playground", "compare"])
def test_playing_app_pauses_when_beats_stop_and_says_so(apps, kind):
    app = apps(kind)
    app.watch_timeout = 1.5
    app.play()
    start = time.monotonic()
    while time.monotonic() - start < 3.0:  # watched: beats keep it playing past the timeout
        beat(app)
        time.sleep(0.2)
    assert app.playing and not app.paused_unwatched
    stopped_beating = time.monotonic()
    assert wait_until(lambda: not app.playing, timeout=10)
    waited = time.monotonic() - stopped_beating
    assert 1.5 <= waited <= 4.5, waited
    assert app.paused_unwatched
    assert "paused: nobody was watching" in app.unwatched_notice.value
    time.sleep(0.3)  # the step in flight when it paused completes
    steps = app.runner.steps_taken
    time.sleep(0.5)
    assert app.runner.steps_taken == steps  # really idle
    beat(app)  # someone looks again: the notice is still there for them to read
    assert "nobody was watching" in app.unwatched_notice.value
    app.play()
    assert wait_until(lambda: app.unwatched_notice.value == "" and not app.paused_unwatched, timeout=5)


def test_without_any_front_end_the_first_beat_allowance_applies(apps):
    pg = apps()
    pg.watch_timeout, pg.first_watch_timeout = 0.5, 2.0
    pg.play()
    time.sleep(1.2)
    assert pg.playing  # still loading, maybe: the longer allowance counts from play
    assert wait_until(lambda: not pg.playing, timeout=6)
    assert pg.paused_unwatched


def test_watching_can_be_switched_off(apps):
    pg = apps()
    pg.watch_timeout = pg.first_watch_timeout = None
    pg.play()
    time.sleep(2.5)
    assert pg.playing
    pg.pause()
    assert UNWATCHED_NOTICE  # the text exists even when never shown


def test_close_stops_the_watchdog(apps):
    pg = apps()
    pg.close()
    assert not pg._watchdog.is_alive()


@pytest.mark.parametrize("kind", ["playground", "compare"])
def test_play_when_watched_waits_for_the_first_beat(apps, kind):
    app = apps(kind)
    app.play_when_watched()  # the dashboard's ?play=1: no front end yet (a curl of the page never gets further)
    time.sleep(0.5)
    assert not app.playing
    beat(app)  # the page is on screen
    assert wait_until(lambda: app.playing, timeout=10)
    app.pause()
    beat(app)  # later beats do not restart a run the user paused
    time.sleep(0.3)
    assert not app.playing
    app.play_when_watched()  # already watched: plays at once
    assert wait_until(lambda: app.playing, timeout=10)


def test_pause_cancels_a_pending_play_when_watched(apps):
    pg = apps()
    pg.play_when_watched()
    pg.pause()
    beat(pg)
    time.sleep(0.3)
    assert not pg.playing
