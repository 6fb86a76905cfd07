"""``sde-lab export``: a training run's weights in a format other tools read without pickle.

    sde-lab export --ckpt runs/ring_vp --format safetensors --out exports/ring_vp

writes ``model.safetensors`` (the EMA weights; ``--no-ema``: the raw ones) and ``sde_lab.json`` (the config:
path, parametrization, network; step, data range). ``sde-lab sample/eval/likelihood --ckpt exports/ring_vp``
and :func:`sde_lab.export.load_exported` read it back (no pickle; a tampered tensor is refused by name).
"""

from __future__ import annotations

FORMATS = ("safetensors",)


def add_parser(sub):
    p = sub.add_parser("export", help="export a training run's weights (safetensors + JSON config, no pickle)",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, metavar="PATH", help="training checkpoint file or workdir")
    p.add_argument("--format", choices=FORMATS, default="safetensors", help="default: safetensors")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (kept unless --overwrite)")
    p.add_argument("--no-ema", action="store_true", help="export the raw training weights instead of the EMA weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    return p


def run(args) -> int:
    from ..export import export_safetensors

    out = export_safetensors(args.ckpt, args.out, ema=not args.no_ema, overwrite=args.overwrite)
    print(f"exported {'raw' if args.no_ema else 'EMA'} weights of {args.ckpt} -> {out / 'model.safetensors'}, "
          f"{out / 'sde_lab.json'}")
    return 0
