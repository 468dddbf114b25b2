"""Act stage: hand decisions to load balancers (NGINX upstream file, HAProxy agent-check)."""
