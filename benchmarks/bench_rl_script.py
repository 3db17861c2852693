"""Does a third-party script reproduce the real-data gain? Runs the README's `gym.make` + SB3 example as written.

    .venv/bin/python -m benchmarks.bench_rl_script [--out runs/bench-rl-script]

The Python block under "Reinforcement learning with `gym.make`" in README.md is executed unchanged (only its
working directory is `--out`, so its `runs/my-ppo` lands there): it trains PPO on the training personas with
`simrec.rl.make_sb3_vec_env(..., personas="train")` and scores it with `simrec.rl.evaluate`. Printed: what the
snippet prints, then the held-out figures next to the base (real hit and like differences with their intervals,
the sim-greedy yardstick's gain, in-sim / real lift) and the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Reinforcement learning with `gym.make`"


def readme_snippet(readme: Path = README) -> str:
    """The first ```python block after the RL section's heading."""
    text = readme.read_text()
    start = text.index(SECTION)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    if match is None:
        raise ValueError(f"{readme}: no python block under {SECTION!r}")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-rl-script"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    code = readme_snippet()
    namespace: dict = {"__name__": "__readme__"}
    t0 = time.perf_counter()
    with contextlib.chdir(args.out):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102  (the README's own example)
    seconds = time.perf_counter() - t0
    real = namespace["result"]["comparisons"]["real"]
    transfer = namespace["result"]["comparisons"]["transfer"]
    for key in ("real_hit", "real_like"):
        diff = real[f"{key}_difference_vs_base"]
        greedy = real[f"greedy_{key}_difference_vs_base"]["difference"]
        print(
            f"{key} − base {diff['difference']:+.4f} [{diff['ci'][0]:+.4f}, {diff['ci'][1]:+.4f}] "
            f"({diff['n_personas']} held-out personas); sim-greedy − base {greedy:+.4f}"
        )
    ratio = transfer["sim_over_real"]
    print(
        f"in-sim lift {transfer['sim_lift']:+.3f} / real lift {transfer['real_lift']:+.3f} = "
        + ("n/a" if ratio is None else f"{ratio:.2f}")
        + f"; wall {seconds:.0f} s, cpus {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
