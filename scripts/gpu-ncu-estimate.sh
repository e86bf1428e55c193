#!/usr/bin/env bash
# Where the estimate's time goes on the GPU machine: builds the op library, then times each kernel
# of one torch.ops.xattn.estimate call (bf16, Hq 32, Hkv 8, d 128, causal) with Nsight Compute.
#
#   scripts/gpu-ncu-estimate.sh OUT_DIR [LENGTH] [STRIDE]
set -uo pipefail
out=${1:?usage: scripts/gpu-ncu-estimate.sh OUT_DIR [LENGTH] [STRIDE]}
length=${2:-131072}
stride=${3:-8}
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=${XATTN_GPU_BUILD:-build-gpu}
script_name=gpu-ncu-estimate
source "$(dirname "$0")/gpu-common.sh"
gpu_environment
gpu_configure || exit 1
ninja -C "$build" -j16 xattn_ops > "$out/build.log" 2>&1 || { note "build FAILED"; exit 1; }
cat > "$out/one_estimate.py" <<PY
import torch
torch.ops.load_library("$build/runtime/libxattn_ops.so")
g = torch.Generator(device="cuda"); g.manual_seed(0)
q = torch.randn(1, 32, $length, 128, device="cuda", dtype=torch.bfloat16, generator=g)
k = torch.randn(1, 8, $length, 128, device="cuda", dtype=torch.bfloat16, generator=g)
tau = torch.full((32,), 0.9, device="cuda")
for _ in range(2):
    torch.ops.xattn.estimate(q, k, tau, $stride, 128, True)
torch.cuda.synchronize()
PY
/usr/local/cuda/bin/ncu --clock-control none --launch-skip 0 --section SpeedOfLight \
  --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
  -k regex:'scoring|select|fill' python3 "$out/one_estimate.py" > "$out/ncu.txt" 2>&1
note "ncu exit $?"
grep -E "^  [a-z_:]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Achieved Occupancy|Stall|L1/TEX Hit|L2 Hit" "$out/ncu.txt" | head -80
