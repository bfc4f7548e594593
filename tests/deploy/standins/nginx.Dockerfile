# Test stand-in for the official nginx image, which cannot be pulled here: Debian's nginx laid out like it
# (http block including /etc/nginx/conf.d/*.conf, logs to stdout/stderr, `nginx -g 'daemon off;'`, SIGQUIT to stop).
FROM python:3.11-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
