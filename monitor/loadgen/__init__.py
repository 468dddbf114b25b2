"""An open-loop load generator for OpenAI-compatible servers (the simulator or a real vLLM).

Open loop (Poisson arrivals that do not wait for answers) because that is how real users behave:
a closed loop slows down with the server and hides exactly the queueing an SLO monitor must see.
The summary follows vLLM's serving benchmark, so numbers can be compared with published runs.
"""
