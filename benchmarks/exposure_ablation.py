"""Summarise the exposure-chain ablation: candidates fine-tuned from default_mc v3, each
against v3 on the same images (paired bootstrap Δ), from the per-run result files.

Each candidate TAG has, in ``--dir``: ``foreign_TAG.json`` (``foreign_mc.py --versus
default_mc_v3``, the held-out patient), ``rob_hard_TAG.json`` and ``rob_mod_TAG.json``
(``robustness.py --eval-only --versus default_mc_v3`` on mc-diverse and its SNR 3-20 redraw,
with the mc-bench and mc-exposure tests), and ``foreign_dev.json`` holds the outside lesion
model on the TRAINING patient for all candidates (the set the shipped one was chosen on).

    python benchmarks/exposure_ablation.py --dir benchmarks/results/exposure_ablation \\
        --tags v4,v4s1,v4b,ctl --out benchmarks/results/exposure_ablation.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REF = "default_mc_v3"


def _cell(sub: dict, name: str) -> dict:
    m = sub["methods"][name]
    out = {"aufroc_10": m["aufroc_10"], "ci95": m["aufroc_10_ci95"]}
    if "at_stored_threshold" in m:
        a = m["at_stored_threshold"]
        out["fppi_at_threshold"], out["sensitivity_at_threshold"] = a["fppi"], a["sensitivity"]
    p = sub.get(f"paired_vs_{REF}", {}).get(name)
    if p:
        out["delta_vs_v3"], out["delta_ci95"] = p["delta"], p["delta_ci95"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--tags", required=True, help="comma-separated candidate tags")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = Path(args.dir)
    dev = json.loads((d / "foreign_dev.json").read_text())["all"]
    table: dict[str, dict] = {}
    for tag in ["v3", *args.tags.split(",")]:
        name = f"default_mc_{tag}"
        src = tag if tag != "v3" else args.tags.split(",")[0]
        foreign = json.loads((d / f"foreign_{src}.json").read_text())["subsets"]
        hard = json.loads((d / f"rob_hard_{src}.json").read_text())
        mod = json.loads((d / f"rob_mod_{src}.json").read_text())
        rows = {
            "outside model, held-out patient": _cell(foreign["all"], name),
            "outside model, training patient (selection)": _cell(dev, name),
            "hard mixed": _cell(hard["subsets"]["mixed"], name),
            "hard real backgrounds": _cell(hard["subsets"]["real_background"], name),
            "moderate mixed": _cell(mod["subsets"]["mixed"], name),
            "mc-bench": _cell(hard["extra_tests"]["mc-bench"], name),
            "mc-exposure": _cell(hard["extra_tests"]["mc-exposure"], name),
        }
        families = [k for k in hard["subsets"] if k.startswith("family:")]
        fppi = {
            which: [
                res["subsets"][k]["methods"][name]["at_stored_threshold"]["fppi"] for k in families
            ]
            for which, res in (("hard", hard), ("moderate", mod))
        }
        table[tag] = {
            "tests": rows,
            "fppi_at_threshold_families": {w: [min(v), max(v)] for w, v in fppi.items()},
        }
    Path(args.out).write_text(json.dumps({"reference": REF, "candidates": table}, indent=1))
    tags = list(table)
    print(f"{'test (AUFROC_10 %; Δ vs v3)':46s} " + " ".join(f"{t:>22s}" for t in tags))
    for row in table[tags[0]]["tests"]:
        cells = []
        for t in tags:
            c = table[t]["tests"][row]
            txt = f"{100 * c['aufroc_10']:.1f}"
            if "delta_vs_v3" in c:
                lo, hi = c["delta_ci95"]
                txt += f" ({100 * c['delta_vs_v3']:+.1f}, {100 * lo:+.1f}..{100 * hi:+.1f})"
            cells.append(f"{txt:>22s}")
        print(f"{row:46s} " + " ".join(cells))
    for which in ("hard", "moderate"):
        cells = [
            "{:.2f}-{:.2f}".format(*table[t]["fppi_at_threshold_families"][which]) for t in tags
        ]
        print(f"{'FPpI at γ, ' + which + ' families':46s} " + " ".join(f"{c:>22s}" for c in cells))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
