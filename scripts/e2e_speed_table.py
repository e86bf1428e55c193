#!/usr/bin/env python3
"""Collects scripts/gpu-e2e-speed.sh's results (JSON lines) into one JSON file and prints a
markdown table: prefill time dense against patched (density-aware dispatch) per runner, model
and length, and the low-density rows with the attention-only speed-up next to the whole prefill.

    python3 scripts/e2e_speed_table.py RESULTS.jsonl OUT.json
"""

import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    print("| runner | model | profile | L | dense ms | patched ms | speed-up (dense / patched) | "
          "attention-only speed | layers sparse | mean density | >= 0.98x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for r in rows:
        ok = r["speedup"] >= 0.98
        failed += r.get("target", True) and not ok
        attention = r.get("attention_speedup")
        attention = "" if attention is None else f"{attention:.2f}x"
        density = "" if r.get("density") is None else f"{100 * r['density']:.1f} %"
        print(f"| {r['runner']} | {r['model'].rstrip('/').split('/')[-1]} | "
              f"{r.get('profile_kind', 'calibrated')} | {r['length']} | {r['dense_ms']:.2f} | "
              f"{r['patched_ms']:.2f} | {r['speedup']:.3f}x | {attention} | "
              f"{r.get('sparse_layers', '')} | {density} | {'yes' if ok else 'NO'} |")
    targeted = sum(1 for r in rows if r.get("target", True))
    verdict = "PASS" if failed == 0 and targeted else "FAIL"
    print(f"\ne2e speed: {targeted - failed} of {targeted} calibrated-profile rows at >= 0.98x "
          f"dense ({verdict})")
    for r in rows:  # the transformers adapter's own work, every call dense by the crossover
        if "all_dense_speed" in r:
            print(f"transformers {r['length']}: sdpa / patched with every call dense "
                  f"{r['all_dense_speed']:.3f}x; attention_mask seen: {r.get('masks_seen')}")
    return 0 if failed == 0 and targeted else 1


if __name__ == "__main__":
    sys.exit(main())
