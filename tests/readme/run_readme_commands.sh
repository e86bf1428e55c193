#!/usr/bin/env bash
# Runs the shell commands of README.md against a build, so that a README command that no longer
# parses or no longer runs fails CI (ctest readme_commands, label cpu).
#
#   run_readme_commands.sh README XATTN BUILD_DIR
#
# The rules:
# - A fenced block whose opening fence has no language, or sh / bash / shell / console, holds
#   commands, one per line. The line just before its opening fence must be a marker:
#     <!-- readme-test: run [--option value | --flag]... -->   run every line of the block
#     <!-- readme-test: skip REASON -->                        run nothing; REASON is printed
#   A command block without a marker fails the test, so each new README command is classified.
# - In a command line, "# ..." comments and "[...]" optional parts are dropped; a leading `xattn`
#   is the XATTN executable.
# - The options of a `run` marker make the run small and CPU-only: each replaces the value the
#   command gives for that option, or is appended when the command does not give it. This is how
#   the full calibration (4 x 4096 tokens, minutes) and GPU runs (--device cuda) are run here:
#   with the same options and files, on fewer and shorter samples, on the CPU.
# - Every command runs in a fresh folder of its own, holding the files the README's commands
#   name: `examples` and `profiles` (links to the source tree's), `build` (a link to BUILD_DIR),
#   `DIR` (the bundled model), `text.txt` (the bundled calibration text), `ids.txt` (its first
#   2048 bytes as token ids of the byte-level model), `run1.h5`, `run2.h5` (the bundled capture)
#   and `host1.h5`, `host2.h5` (statistics measured on it). It must exit with 0 within 300 s.
set -u

readme=$1
xattn=$2
build_dir=$3
source_dir=$(cd "$(dirname "$readme")" && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/xattn-readme-XXXXXX")
trap 'rm -rf "$scratch"' EXIT

fail() {
  echo "readme_commands: $*" >&2
  exit 1
}

# The shared files, made once.
fixtures=$scratch/fixtures
mkdir -p "$fixtures"
head -c 2048 "$source_dir/examples/data/calibration.txt" | od -An -tu1 -v > "$fixtures/ids.txt"
for i in 1 2; do
  "$xattn" calibrate --capture "$source_dir/examples/data/sample_capture.h5" \
    --out "$fixtures/p$i.h5" --stats-out "$fixtures/host$i.h5" > "$fixtures/setup.log" 2>&1 ||
    fail "could not make the statistics fixtures: $(tail -1 "$fixtures/setup.log")"
done
rm -f "$fixtures"/p?.h5 "$fixtures/setup.log"

prepare_folder() {
  local folder=$1
  mkdir -p "$folder"
  ln -s "$source_dir/examples" "$folder/examples"
  ln -s "$source_dir/profiles" "$folder/profiles"
  ln -s "$build_dir" "$folder/build"
  ln -s "$source_dir/examples/models/xattn-byte" "$folder/DIR"
  ln -s "$source_dir/examples/data/calibration.txt" "$folder/text.txt"
  ln -s "$source_dir/examples/data/sample_capture.h5" "$folder/run1.h5"
  ln -s "$source_dir/examples/data/sample_capture.h5" "$folder/run2.h5"
  cp "$fixtures/ids.txt" "$fixtures/host1.h5" "$fixtures/host2.h5" "$folder/"
}

# Sets the words of the command line `words` (an array name) from the marker's options.
apply_options() {
  local -n cmd=$1
  shift
  local -a options=("$@")
  local i=0 j
  while [ $i -lt ${#options[@]} ]; do
    local name=${options[$i]} value=""
    local has_value=0
    if [ $((i + 1)) -lt ${#options[@]} ] && [[ ${options[$((i + 1))]} != --* ]]; then
      value=${options[$((i + 1))]}
      has_value=1
    fi
    local found=0
    for ((j = 0; j < ${#cmd[@]}; j++)); do
      if [ "${cmd[$j]}" = "$name" ]; then
        found=1
        if [ $has_value = 1 ] && [ $((j + 1)) -lt ${#cmd[@]} ]; then cmd[$((j + 1))]=$value; fi
      fi
    done
    if [ $found = 0 ]; then
      cmd+=("$name")
      [ $has_value = 1 ] && cmd+=("$value")
    fi
    i=$((i + 1 + has_value))
  done
}

fence_re='^```(.*)$'
run_re='^<!-- readme-test: run(.*)-->$'
skip_re='^<!-- readme-test: skip (.*) -->$'
ran=0
skipped=0
failed=0
marker=""
marker_line=0
in_block=0
block_kind=""
run_options=()
line_number=0
command_number=0
while IFS= read -r line || [ -n "$line" ]; do
  line_number=$((line_number + 1))
  if [ $in_block = 0 ]; then
    if [[ $line =~ $fence_re ]]; then
      language=${BASH_REMATCH[1]}
      in_block=1
      block_kind=other
      case $language in
        "" | sh | bash | shell | console)
          if [[ $marker =~ $run_re ]]; then
            block_kind=run
            read -r -a run_options <<< "${BASH_REMATCH[1]}"
          elif [[ $marker =~ $skip_re ]]; then
            block_kind=skip
            echo "skip (README.md line $line_number): ${BASH_REMATCH[1]}"
          else
            echo "README.md line $line_number: a command block without a marker; put" \
              "<!-- readme-test: run ... --> or <!-- readme-test: skip REASON --> on the line" \
              "before it (tests/readme/run_readme_commands.sh)" >&2
            failed=$((failed + 1))
            block_kind=unmarked
          fi
          ;;
      esac
    fi
    marker=$line
    continue
  fi
  if [[ $line =~ $fence_re ]]; then
    in_block=0
    marker=""
    continue
  fi
  text=${line%%#*}                                  # comments
  text=$(sed -E 's/\[[^]]*\]//g' <<< "$text")      # [optional parts]
  read -r -a words <<< "$text"
  [ ${#words[@]} = 0 ] && continue
  if [ "$block_kind" = skip ]; then
    skipped=$((skipped + 1))
    continue
  fi
  [ "$block_kind" = run ] || continue
  [ "${words[0]}" = xattn ] && words[0]=$xattn
  apply_options words "${run_options[@]}"
  command_number=$((command_number + 1))
  folder=$scratch/command-$command_number
  prepare_folder "$folder"
  start=$SECONDS
  if (cd "$folder" && timeout 300 "${words[@]}" > output.log 2>&1); then
    echo "ok   (README.md line $line_number, $((SECONDS - start)) s): ${words[*]}"
    ran=$((ran + 1))
  else
    code=$?
    echo "FAIL (README.md line $line_number, exit $code): ${words[*]}" >&2
    tail -5 "$folder/output.log" | sed 's/^/     /' >&2
    failed=$((failed + 1))
  fi
done < "$readme"

echo "readme_commands: $ran run, $skipped skipped, $failed failed"
[ $failed = 0 ] && [ $ran -gt 0 ]
