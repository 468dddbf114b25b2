"""`slo-monitor demo`: a simulated fleet, load against it and the monitor over it, in one process.

The quickest way to see what the monitor sees and decides, with nothing installed but this package:
three instances on loopback, open-loop load, the service scraping them into SQLite, and one instance
made slow part-way so the difference shows up in the service's figures.
"""
