# Sourced by the scripts/gpu-*.sh programs: the GPU machine's environment and two helpers.
#   gpu_environment        unpacks .devdebs/*.deb (Boost.Program_options, nlohmann-json: missing
#                          there) into /opt/xs, puts nvcc on PATH, sets torch_prefix to LibTorch's
#                          CMake prefix from python3 and start to the current time
#   note TEXT              prints TEXT with the time and appends it to $out/summary.txt
#   time_left WHAT         false (and says so) once XATTN_GPU_BUDGET_S (default 540) seconds
#                          have passed since gpu_environment
#   gpu_configure [ARGS]   configures $build (Release, LibTorch from python3, /opt/xs, sm_90, no
#                          examples, plus ARGS) into $out/configure.log; on failure says so, 1
#   archive_logs [KEEP...] moves everything in $out except summary.txt and the KEEP names into
#                          $out/logs.tar.gz (the device tool returns only a few files)
# Callers set $out (an absolute folder) and $script_name first.

gpu_environment() {
  if compgen -G ".devdebs/*.deb" > /dev/null; then
    mkdir -p /opt/xs
    for f in .devdebs/*.deb; do dpkg -x "$f" /opt/xs; done
    export LD_LIBRARY_PATH=/opt/xs/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  fi
  torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  export PATH=/usr/local/cuda/bin:$PATH
  start=$(date +%s)
}

gpu_configure() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;/opt/xs/usr" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DXATTN_BUILD_EXAMPLES=OFF "$@" > "$out/configure.log" 2>&1 && return 0
  note "configure FAILED"
  tail -30 "$out/configure.log"
  return 1
}

note() { echo "[$script_name $(date +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }

time_left() {
  if [ $(( $(date +%s) - start )) -gt "${XATTN_GPU_BUDGET_S:-540}" ]; then
    note "time budget spent: skipping $1"
    return 1
  fi
}

archive_logs() {
  local keep="logs.tar.gz summary.txt $*" name logs=()
  while IFS= read -r name; do  # one name per line: names with spaces stay whole
    [[ " $keep " == *" $name "* ]] || logs+=("$name")
  done < <(cd "$out" && ls -1)
  [ ${#logs[@]} -eq 0 ] && return 0
  tar -czf "$out/logs.tar.gz" -C "$out" "${logs[@]}" && (cd "$out" && rm -rf "${logs[@]}")
}
