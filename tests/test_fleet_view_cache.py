"""An instance's view is computed once per cycle (issue 21: /metrics, the API, the console and cost each ask for
every instance's view), and never served stale: a new scrape, a failed one, or a moved URL gives a new view."""

from __future__ import annotations

from monitor.evaluate.fleet import FleetView
from monitor.samples import Histogram, ModelSample, ScrapeResult

BOUNDS = (0.1, 1.0, float("inf"))


def result(t: float, finished: float, ok: bool = True) -> ScrapeResult:
    sample = ModelSample("m", {"ttft": Histogram(BOUNDS, (finished, finished, finished), 0.05 * finished, finished)},
                         counters={"generation_tokens": 10 * finished}, finished={"stop": finished})
    return ScrapeResult("p", "10.0.0.1:8000", "http://10.0.0.1:8000/metrics", t, 0.01, (sample,) if ok else (),
                        None if ok else "timed out")


def fleet() -> FleetView:
    view = FleetView(60.0, 5.0, {"p": {"10.0.0.1:8000": "http://10.0.0.1:8000"}})
    view.ingest([result(100.0, 10.0), result(105.0, 20.0)])
    return view


def test_asking_twice_at_the_same_time_gives_the_same_view() -> None:
    view = fleet()
    track = view.tracks["10.0.0.1:8000"]
    assert view.view(track, 105.0) is view.view(track, 105.0)
    assert view.view(track, 105.0).figures["requests_per_s"] == 2.0


def test_a_new_scrape_a_failed_scrape_and_a_new_url_each_give_a_new_view() -> None:
    view = fleet()
    track = view.tracks["10.0.0.1:8000"]
    first = view.view(track, 105.0)
    view.ingest([result(110.0, 40.0)])
    second = view.view(track, 110.0)
    assert second is not first and second.figures["requests_per_s"] == 3.0
    view.ingest([result(115.0, 0.0, ok=False)])
    third = view.view(track, 110.0)
    assert third.scrape_error == "timed out" and second.scrape_error is None
    view.set_members({"p": {"10.0.0.1:8000": "http://10.0.0.1:8001"}})
    assert view.view(track, 110.0).url == "http://10.0.0.1:8001"
