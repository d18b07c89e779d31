# specd CPU image: the worker, the controller and the tools, built from this checkout.
# Models are not baked in: mount them at /models (docker-compose.yml mounts ../shared/models).
FROM debian:12-slim AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh
COPY . .
# x86-64-v3 (AVX2, FMA, F16C) instead of -march=native: the image runs on other hosts.
RUN make -j"$(nproc)" MARCH=-march=x86-64-v3 programs

FROM debian:12-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        libzmq5 libmsgpackc2 libhiredis0.14 libmicrohttpd12 libyaml-0-2 libcjson1 \
        libxxhash0 libpcre2-8-0 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/ /usr/local/bin/
COPY config/ /etc/specd/
USER nobody
