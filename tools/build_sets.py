"""Builds the real data sets (or finds them cached) and says where they are.

    python tools/build_sets.py piano drums digits [--root DIR] [--seed N] [--force]

Each set is made from Debian packages, which are installed when missing (apt-get, with sudo
when not root), into ROOT/sets/NAME/{train,heldout}/; ROOT defaults to the data cache
(~/.cache/ganstream), where `data.source=set:NAME` finds it. See training/data/real_sets.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ganstream.training.data import real_sets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", choices=sorted(real_sets.SETS), metavar="SET", help=f"one or more of: {', '.join(real_sets.SETS)}")
    p.add_argument("--root", type=Path, help="where sets/NAME/ go (default: the data cache, $XDG_CACHE_HOME/ganstream or ~/.cache/ganstream)")
    p.add_argument("--seed", type=int, default=0, help="fixes the clips and the held-out split (default: %(default)s; set:NAME sources use 0)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached set is up to date")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root or real_sets.default_root()
    for name in args.sets:
        t0 = time.perf_counter()
        try:
            folder = real_sets.build_set(name, root, args.seed, force=args.force)
        except real_sets.SetError as e:
            print(f"build_sets: error: {e}", file=sys.stderr)
            return 2
        stamp = real_sets.read_stamp(folder) or {}
        counts = stamp.get("counts", {})
        print(f"{name}: {folder}  ({time.perf_counter() - t0:.1f} s; built in {stamp.get('build_s', '?')} s on {stamp.get('built', '?')})")
        for split in real_sets.SPLITS:
            c = counts.get(split, {})
            print(f"  {split:<8} {c.get('clips', '?'):>5} clips  {c.get('seconds', 0) / 60:6.1f} min  {folder / split}")
        if args.seed == 0 and args.root is None:
            print(f"  use: data.source=set:{name}   eval: ganstream eval RUN set:{name}/heldout")
        else:
            print(f"  use: data.source={folder / 'train'}   eval: ganstream eval RUN {folder / 'heldout'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
