"""DVC stage download@<dataset>: fetch, verify and convert one dataset into data/<dataset>/."""

import argparse
import sys
from pathlib import Path

from cnnbench import CnnbenchError
from cnnbench.config import ConfigError, load_params
from cnnbench.data import prepare
from cnnbench.files import check_writable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data", help="the folder that receives <dataset>/ (default: data)")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        if args.dataset not in params.datasets:
            raise ConfigError(f"dataset {args.dataset!r} is not declared in {args.params}; "
                              f"declared: {', '.join(params.datasets)}")
        entry = params.datasets[args.dataset]
        npz = Path(args.params).parent / entry.path if entry.source == "npz" else None
        check_writable(Path(args.out))
        meta = prepare(args.dataset, Path(args.out) / args.dataset, npz=npz,
                       sha256=getattr(entry, "sha256", None))
    except CnnbenchError as e:
        print(f"download@{args.dataset}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk that fills up or goes away
        print(f"download@{args.dataset}: error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{s} {v['count']}" for s, v in meta["splits"].items())
    print(f"data/{args.dataset}: {counts} images of {'x'.join(map(str, meta['input_shape']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
