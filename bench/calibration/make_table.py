#!/usr/bin/env python3
"""Turns the results.json of scripts/gpu-calibration-quality.sh into docs/calibration-quality.md.

  python3 bench/calibration/make_table.py RESULTS.json [--out docs/calibration-quality.md]
      [--command "..."] [--device "..."]

For every (model, length, objective) it lists the held-out frontier points and compares the two
curves at fixed densities, interpolating each curve as `xattn calibrate` does (geometric in KL
between measured neighbours, no extrapolation). The acceptance rule of the calibration-quality
issue is checked and printed per run: per-head KL <= uniform KL at every density from 5 % to 50 %
that both curves cover, and at least 1.5x less somewhere in 5-25 %.
"""
import argparse
import json
import math
import sys

GRID = [0.05, 0.075, 0.10, 0.125, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50]


def kl_at(curve, density):
    pts = sorted((p["density"], p["kl"]) for p in curve)
    if not pts or density < pts[0][0] or density > pts[-1][0]:
        return None
    for (d0, k0), (d1, k1) in zip(pts, pts[1:]):
        if density <= d1:
            if d1 == d0:
                return min(k0, k1)
            f = (density - d0) / (d1 - d0)
            if k0 > 0 and k1 > 0:
                return math.exp(math.log(k0) + f * (math.log(k1) - math.log(k0)))
            return k0 + f * (k1 - k0)
    return pts[-1][1]


def run_rows(profile):
    f = profile.get("frontier") or {}
    uniform, per_head = f.get("uniform", []), f.get("per_head", [])
    rows, ratios = [], {}
    for d in GRID:
        u, p = kl_at(uniform, d), kl_at(per_head, d)
        if u is None or p is None:
            continue
        ratio = u / p if p > 0 else math.inf
        ratios[d] = ratio
        rows.append((d, p, u, ratio))
    return uniform, per_head, rows, ratios


def verdict(ratios):
    if not ratios:
        return "no overlap between the curves in 5-50 %"
    worst = min(ratios.values())
    best_low = max((r for d, r in ratios.items() if d <= 0.25), default=None)
    at_or_below = worst >= 1.0
    strict = best_low is not None and best_low >= 1.5
    word = "PASS" if at_or_below and strict else "FAIL"
    return (f"{word}: per-head/uniform KL ratio at worst {worst:.2f}x (>= 1 needed), best in "
            f"5-25 % {best_low:.2f}x (>= 1.5 needed)" if best_low is not None else
            f"{word}: worst ratio {worst:.2f}x; the curves do not overlap below 25 %")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--out", default="docs/calibration-quality.md")
    ap.add_argument("--command", default="scripts/gpu-calibration-quality.sh OUT")
    ap.add_argument("--device", default="one NVIDIA H200")
    ap.add_argument("--date", default="")
    args = ap.parse_args()
    with open(args.results) as f:
        results = json.load(f)
    out = []
    summary = []
    for name in sorted(results, key=lambda n: (n.split("-")[-1], n)):
        profile = results[name]
        uniform, per_head, rows, ratios = run_rows(profile)
        v = profile.get("validation", {})
        tokens = (profile.get("frontier") or {}).get("holdout_tokens", 0)
        summary.append((name, verdict(ratios)))
        out.append(f"### {name}\n")
        out.append(f"Held-out tokens: {tokens}. Budget: {profile['budget']['metric']} <= "
                   f"{profile['budget']['epsilon']:.4g}; the profile itself: density "
                   f"{100 * v.get('e2e_density', float('nan')):.1f} %, KL "
                   f"{v.get('kl_mean', float('nan')):.3g}.\n")
        out.append("| density | per-head KL | uniform KL | uniform / per-head |")
        out.append("|---|---|---|---|")
        for d, p, u, r in rows:
            out.append(f"| {100 * d:.1f} % | {p:.3g} | {u:.3g} | {r:.2f}x |")
        out.append("")
        out.append("Measured points (held out): uniform τ → (density, KL): " + ", ".join(
            f"{q['parameter']:.4g} → ({100 * q['density']:.1f} %, {q['kl']:.3g})"
            for q in sorted(uniform, key=lambda q: q["density"])))
        out.append("")
        out.append("Per-head budget → (density, KL): " + ", ".join(
            f"{q['parameter']:.3g} → ({100 * q['density']:.1f} %, {q['kl']:.3g})"
            for q in sorted(per_head, key=lambda q: q["density"])))
        out.append(f"\n{verdict(ratios)}\n")
    # The two objectives side by side: per-head KL at equal density, kl objective vs output_error.
    objectives = ["", "## Which objective: kl against the output_error proxy", "",
                  "Per-head held-out KL at equal density for the two search objectives (same "
                  "statistics pass, same ladder, same held-out samples), and uniform τ.", "",
                  "| model, length | density | kl objective | output_error proxy | uniform τ |",
                  "|---|---|---|---|---|"]
    for name in sorted(results):
        if not name.endswith("-kl"):
            continue
        other = name[:-3] + "-output_error"
        if other not in results:
            continue
        a = results[name].get("frontier", {})
        b = results[other].get("frontier", {})
        for d in GRID:
            ka, kb, ku = kl_at(a.get("per_head", []), d), kl_at(b.get("per_head", []), d), \
                kl_at(a.get("uniform", []), d)
            if ka is None or kb is None or ku is None:
                continue
            objectives.append(f"| {name[:-3]} | {100 * d:.1f} % | {ka:.3g} | {kb:.3g} | {ku:.3g} |")
    head = [
        "# Calibration quality: per-head profiles against one uniform τ",
        "",
        "Generated by `bench/calibration/make_table.py` from the results of "
        f"`{args.command}` on {args.device}{' (' + args.date + ')' if args.date else ''}. "
        "Each run calibrates one model at one sample length on 8 samples of held-out English text "
        "(`examples/data/haystack.txt`, `examples/data/calibration.txt`; none of the models "
        "trained on it); every 4th sample is held out, and all KL figures below are measured on "
        "those held-out samples only (KL of the next-token distributions against dense "
        "attention, nats per position). Curves are interpolated between measured points "
        "(geometric in KL), never extrapolated. Models: `xattn-byte` (bundled), `xattn-byte-b` "
        "and `xattn-byte-c` (docs/models-zoo.md).",
        "",
        "**The objective.** `--metric kl` (the default for model runs) gives each head at each τ "
        "the error it adds to the residual stream through its own slice of o_proj, "
        "mean over tokens of |W_O,h (o_sparse - o_dense)|^2 (measured in the statistics pass at "
        "no extra attention cost: values are multiplied by the Cholesky factor of W_O,h^T W_O,h), "
        "times its layer's measured KL sensitivity: each layer alone is made sparse at τ = 0.9 on "
        "two fitting samples (resuming from the recorded dense input of that layer) and the "
        "measured KL is regressed on the summed projected error. The search budget is then the "
        "predicted end-to-end KL in nats per position, and the exact DP is unchanged. The "
        "`output_error` rows use the earlier proxy (relative L2 of each head's output, every head "
        "alike, worst sample) on the same statistics, for comparison.",
        "",
        "**Reading the verdicts.** The grid runs from 5 % to 50 % but a comparison exists only "
        "where both measured curves reach: at 4K tokens no setting goes below about 18-20 % "
        "(the sink, the diagonal and the dense last query block are always kept), so those runs "
        "start there. At the very sparse end both curves meet (every head at its lowest τ), "
        "which is where the worst ratios sit. Model B does not retrieve passkeys "
        "(docs/models-zoo.md); it is still a long-context language model, and its text KL is "
        "what is measured here. The model of the issue that first showed per-head no better than "
        "uniform is not available here, so its exact case is not re-run; the three models here "
        "are two seeds, two data mixes and two head shapes (head_dim 64 and 128).",
        "",
        "## Verdicts",
        "",
        "| run | verdict |",
        "|---|---|",
    ] + [f"| {n} | {v} |" for n, v in summary] + ["", "## Runs", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(head + out + objectives) + "\n")
    print("\n".join(f"{n}: {v}" for n, v in summary))


if __name__ == "__main__":
    sys.exit(main())
