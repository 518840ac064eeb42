"""Convert VGG weights between torchvision, Keras and vgg_jax's formats, or export a training run.

    python scripts/convert_weights.py vgg16-397923af.pth vgg16.msgpack --config D
    python scripts/convert_weights.py vgg16_weights_tf_dim_ordering_tf_kernels.h5 vgg16_keras/ --config D
    python scripts/convert_weights.py vgg16.msgpack vgg16_back.pth --config D
    python scripts/convert_weights.py runs/finetune finetuned.msgpack
    python scripts/convert_weights.py runs/finetune --serve finetuned.jax   # for serving, without vgg_jax

SRC is a weights file, an Orbax directory, a published name (keras:vgg16), or
a training run's workdir (its newest checkpoint) or step folder
(runs/x/checkpoints/15). Formats follow the extension. In: .pth/.pt (needs
torch), .safetensors, .h5 (Keras), .msgpack, an Orbax directory. Out:
.msgpack (Flax serialization), .safetensors, .pth (torchvision layout, needs
torch), or any other path as an Orbax checkpoint directory. The output
records the config, the pixel convention (the run's, the file's, or
--preprocess), the class names and the training crop, so that predict.py and
evaluate.py use it as it was meant (.pth records nothing). Loading is strict;
an existing output is never replaced.

--serve OUT writes a `jax.export` artifact (serialized StableHLO, for CPUs
and NVIDIA GPUs): uint8 images at the model's crop size in, probabilities
out, the pixel convention and the softmax inside, the batch size free. Beside
it: OUT.json (crop size, class names), OUT.requirements.txt (what a client
needs: jax, jaxlib, flatbuffers, numpy and Pillow, never vgg_jax) and
OUT.client.py, a client that prints photos' top classes (docs/weights.md).
"""

import argparse
import sys

from vgg_jax.cli import OneLineParser, add_weights_flags, fail, printer, prog_name

PROG = "convert_weights.py"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog_name(PROG), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src")
    parser.add_argument("dst", nargs="?", help="the converted weights file (optional with --serve)")
    parser.add_argument(
        "--serve", metavar="OUT", help="also (or only) write a jax.export artifact for serving to OUT"
    )
    add_weights_flags(parser, recorded=True)
    bn = parser.add_mutually_exclusive_group()
    bn.add_argument(
        "--batch-norm",
        dest="batch_norm",
        action="store_true",
        default=None,
        help="a _bn variant (default: read from the file)",
    )
    bn.add_argument("--no-batch-norm", dest="batch_norm", action="store_false")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vgg_jax.weights import resolve

    if args.dst is None and args.serve is None:
        return fail(prog_name(PROG), "give DST, --serve OUT, or both")
    try:
        if args.dst is not None:
            named = resolve.export(
                args.src,
                args.dst,
                args.config,
                args.preprocess,
                batch_norm=args.batch_norm,
                log=printer(parser),
            )
        else:
            named = resolve.resolve(args.src, args.config, args.preprocess, batch_norm=args.batch_norm)
        if args.serve is not None:
            from vgg_jax.weights import serve

            described = serve.export_serving(named, args.serve)
            print(
                f"{named.description} -> {args.serve} (serving: {described['input']}; {described['output']})"
            )
    # a strict load's report (missing, unexpected, wrong-shape tensors) as one line
    except (
        ValueError,
        OSError,
    ) as error:
        return fail(prog_name(PROG), error, parser=parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
