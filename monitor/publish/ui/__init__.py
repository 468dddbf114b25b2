"""The web console (`/ui/`), the public status page (`/status`) and the monthly SLO report, served
by the service itself: server-rendered HTML, a little plain JavaScript and the vendored uPlot
(static/), no build chain. docs/ui.md describes the pages."""
