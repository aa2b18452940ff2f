"""The `wan22` command line (also `python -m wan_core`).

Every command exits 0 on success and non-zero with a one-paragraph message (no traceback) on bad
input; set WAN22_DEBUG=1 to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from wan_core.errors import UserError


def _cmd_make_tiny_checkpoint(args) -> int:
    from wan_core.tiny import make_tiny_checkpoint

    out = make_tiny_checkpoint(args.variant, args.out, seed=args.seed)
    print(f"wrote tiny {args.variant} pipeline folder to {out}")
    return 0


def _cmd_make_demo_dataset(args) -> int:
    from wan_core.data.demo import make_demo_dataset

    if args.videos < 1:
        raise UserError(f"--videos must be at least 1, got {args.videos}")
    out = make_demo_dataset(args.out, videos=args.videos)
    print(f"wrote {args.videos} demo videos, {out / 'data.json'} and {out / 'data.txt'}")
    return 0


def _cmd_demo(args) -> int:
    from wan_core.demo import run_demo

    report = run_demo(args.workdir, variant=args.variant)
    print(f"demo finished; report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wan22", description="Pre-train and sample Wan2.2 video diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-tiny-checkpoint", help="write a tiny random diffusers-format Wan2.2 pipeline folder",
                       description="Write a complete diffusers-format pipeline folder (model_index.json, "
                       "transformer[_2], vae, text_encoder, tokenizer, scheduler) of the variant's architecture "
                       "family at tiny size with random weights. Used by the demo and tests; nothing is downloaded.")
    p.add_argument("--variant", required=True, choices=["ti2v-5b", "t2v-a14b", "i2v-a14b"])
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_tiny_checkpoint)

    p = sub.add_parser("make-demo-dataset", help="write small synthetic videos in the seed's dataset format",
                       description="Write OUT/videos/*.mp4 (moving shapes), OUT/data.json and OUT/data.txt.")
    p.add_argument("--out", required=True)
    p.add_argument("--videos", type=int, default=4)
    p.set_defaults(func=_cmd_make_demo_dataset)

    p = sub.add_parser("demo", help="what `make demo` runs: the end-to-end local run on tiny weights and data")
    p.add_argument("--workdir", default="demo-run")
    p.add_argument("--variant", default="ti2v-5b", choices=["ti2v-5b", "t2v-a14b", "i2v-a14b"])
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_paragraph(message: str) -> str:
    return textwrap.fill(" ".join(str(message).split()), width=100)


def run(argv, parser: argparse.ArgumentParser) -> int:
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(_one_paragraph(f"error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets one readable paragraph
        if os.environ.get("WAN22_DEBUG"):
            raise
        print(_one_paragraph(f"error: {type(exc).__name__}: {exc} (set WAN22_DEBUG=1 for a traceback)"),
              file=sys.stderr)
        return 1


def main(argv=None) -> int:
    return run(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
