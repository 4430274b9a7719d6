"""Freeze the real-model world's texts into the package (``resources/real-world-smollm2.json``).

    python recipes/freeze_real_world.py

Scans this machine's texts with the default ``RealWorldConfig`` on the packaged SmolLM2-135M (as
``prepare_real_world`` does for any other setting) and writes the windows it chose, group by group, with
their SHA-256, as the world every install then reads. Run it only to change the default world on purpose:
then rerun the demo and the studies and update the numbers the README and ``docs/`` quote.
"""

from __future__ import annotations

import argparse

from neumuter_interv.worlds import RealWorldConfig, prepare_real_world
from neumuter_interv.worlds.real import FROZEN_WORLD, freeze_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    world = prepare_real_world(RealWorldConfig(frozen=False), progress=not args.no_progress)
    freeze_world(world)
    print(f"wrote {FROZEN_WORLD} ({len(world.forget_texts)} forget windows, model {world.model_key})")


if __name__ == "__main__":
    main()
