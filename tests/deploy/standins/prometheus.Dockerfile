# Test stand-in for prom/prometheus, which cannot be pulled here: Debian's prometheus package laid out like the
# official image (entrypoint /bin/prometheus, config /etc/prometheus/prometheus.yml, data /prometheus, user nobody (65534),
# port 9090, promtool beside it). wget stands in for busybox's, which the compose healthcheck calls.
FROM python:3.11-slim
# Debian's versions are not pinned (DL3008): the stand-in follows whatever bookworm ships.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown nobody:nogroup /prometheus
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
