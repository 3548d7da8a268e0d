"""`fewbit demo`: the main job on the embedded glyphs data, needing no download."""

from __future__ import annotations

import argparse

from fewbit.cli.common import Output, add_common
from fewbit.demo import run_demo
from fewbit.report.tables import table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="meta-train float32 and 4-bit Conv-4 on glyphs and write a report")
    p.add_argument("--quick", action="store_true", help="a much smaller budget (for CI)")
    p.add_argument("--out", default="demo-report", help="report folder (default demo-report)")
    add_common(p, device=True, threads=True)
    p.set_defaults(handler=run)
    p.epilog = ("The demo computes with 1 thread unless --threads is given: its w4a8 figures depend on the "
                "thread count (see fewbit.demo.DEMO_THREADS), and the README's table is for 1.")


def run(args: argparse.Namespace) -> Output:

    result = run_demo(args.out, quick=args.quick, device=args.device, progress=not args.json, threads=args.threads)
    text = table(result["summary_headers"], result["summary"])
    text += f"\nreport: {result['report_md']} and {result['report_html']} ({result['seconds']:.0f} s)"
    return Output(result, text)
