#!/bin/sh
# Start NGINX once slo-monitor has written the upstream file, then validate and reload whenever it
# changes (the service runs in another container, so its `nginx.reload` command cannot signal us).
f=/shared/nginx/llm-upstreams.conf
while [ ! -s "$f" ]; do sleep 1; done
nginx
last=$(md5sum "$f")
while sleep 1; do
  now=$(md5sum "$f")
  if [ "$now" != "$last" ]; then
    nginx -t && nginx -s reload
    last=$now
  fi
done
