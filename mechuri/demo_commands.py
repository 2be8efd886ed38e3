"""`mechuri demo build|info`: the offline demo model, for those who want the parts of `mechuri chat --demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="build or inspect the small offline demo model")
    sub = demo.add_subparsers(dest="demo_command", metavar="COMMAND", required=True)
    build = sub.add_parser("build", help="train the demo model on the bundled data (cached; a few minutes on CPU)")
    build.add_argument("--out", type=Path, default=None, help="folder to write (default: the user cache folder)")
    build.add_argument("--quick", action="store_true", help="a much smaller model, for tests and smoke runs")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached model exists")
    build.set_defaults(func=cmd_build)
    info = sub.add_parser("info", help="where the demo model is, and how it was built")
    info.add_argument("--quick", action="store_true")
    info.set_defaults(func=cmd_info)


def recipe_for(quick: bool):
    from model.demo.build import QUICK_RECIPE, DemoRecipe

    return QUICK_RECIPE if quick else DemoRecipe()


def cmd_build(args: argparse.Namespace) -> int:
    import shutil

    from model.demo.build import build_demo_model, demo_dir

    recipe = recipe_for(args.quick)
    out = args.out or demo_dir(recipe)
    if args.force:
        shutil.rmtree(out, ignore_errors=True)
    print(f"building the demo model in {out} (cached; rebuilt only when the data or recipe changes)")
    path = build_demo_model(out, recipe=recipe)
    cmd_info_for(path)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from model.demo.build import demo_dir

    return cmd_info_for(demo_dir(recipe_for(args.quick)))


def cmd_info_for(path: Path) -> int:
    from model.demo.build import demo_info

    info = demo_info(path)
    if not info:
        print(f"no demo model yet at {path}: run `mechuri demo build` (or just `mechuri chat --demo`)")
        return 1
    print(f"demo model: {path}")
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0
