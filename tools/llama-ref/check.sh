#!/bin/bash
# How well does llama.cpp itself reproduce ../shared/refs? Fetches llama.cpp (the copy vendored in
# PyPI's llama-cpp-python sdist), builds it outside the repository, builds llama-ref-greedy against
# it and runs it on every model that has a refs file. Nothing of llama.cpp enters the repository.
#
#   tools/llama-ref/check.sh                      build for this CPU and run
#   tools/llama-ref/check.sh --march sapphirerapids --build-only
#                                                 cross-build, e.g. for the GPU machine's Xeon
# Environment: LLAMA_REF_DIR (default /tmp/llama-ref), LLAMA_CPP_PYTHON_VERSION (default 0.3.36).
# Needs: python3 -m pip (or the sdist already in LLAMA_REF_DIR), cmake, a C++ compiler, libcjson-dev.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${SPECD_SHARED:-$ROOT/../shared}
DIR=${LLAMA_REF_DIR:-/tmp/llama-ref}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
MARCH=native
BUILD_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
    --march) MARCH=$2; shift 2 ;;
    --build-only) BUILD_ONLY=1; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

SRC=$DIR/llama.cpp-$VERSION
if [ ! -d "$SRC" ]; then
    mkdir -p "$DIR"
    python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR" >&2
    tar -xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
    mv "$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp" "$SRC"
fi

BUILD=$DIR/build-$MARCH
if [ ! -f "$BUILD/src/libllama.a" ]; then
    if [ "$MARCH" = native ]; then
        isa=(-DGGML_NATIVE=ON)
    else
        isa=(-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF
            -DGGML_AVX512=OFF "-DCMAKE_C_FLAGS=-march=$MARCH" "-DCMAKE_CXX_FLAGS=-march=$MARCH")
    fi
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF "${isa[@]}" >"$BUILD.cmake.log"
    cmake --build "$BUILD" --target llama ggml-cpu -j"$(nproc)" >"$BUILD.build.log"
fi

BIN=$DIR/llama-ref-greedy-$MARCH
march_flag=-march=$MARCH
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra "$march_flag" -I"$ROOT" -I"$SRC/include" -I"$SRC/ggml/include" \
    "$ROOT/tools/llama-ref/llama_ref_greedy.c" "$ROOT/tests/support/refs.c" -o "$BIN" \
    "$BUILD/src/libllama.a" "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" \
    "$BUILD/ggml/src/libggml-base.a" -lcjson -Wl,-Bstatic -lstdc++ -Wl,-Bdynamic -lm -lpthread -ldl
echo "built $BIN" >&2
[ "$BUILD_ONLY" = 1 ] && exit 0

grep -m1 "model name" /proc/cpuinfo || true
for refs in "$SHARED"/refs/*.greedy.jsonl; do
    model=$SHARED/models/$(basename "$refs" .greedy.jsonl).gguf
    [ -f "$model" ] && "$BIN" -m "$model" -r "$refs" --no-repack
done
