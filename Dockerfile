FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY migrations ./migrations
RUN pip install --no-cache-dir .
EXPOSE 9470
ENTRYPOINT ["slo-monitor"]
CMD ["serve", "--config", "/etc/slo-monitor/config.yaml", "--listen", "0.0.0.0:9470"]
