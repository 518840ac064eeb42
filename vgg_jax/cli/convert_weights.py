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

import dataclasses
import sys
from typing import Annotated, Optional

import tyro

from vgg_jax.cli import WeightsFlags, fail, parse, prog_name

PROG = "convert_weights.py"


@dataclasses.dataclass(frozen=True)
class ConvertCommand:
    """convert_weights.py's command line; the pixels and the config are recorded in the output."""

    src: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="SRC")]
    """a weights file, a run's workdir or a published name"""
    dst: Annotated[tyro.conf.Positional[Optional[str]], tyro.conf.arg(metavar="DST")] = None
    """the converted weights file (optional with --serve)"""
    serve: Annotated[Optional[str], tyro.conf.arg(metavar="OUT")] = None
    """also (or only) write a jax.export artifact for serving to OUT"""
    weights: WeightsFlags = WeightsFlags()
    batch_norm: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """a _bn variant (default: read from the file)"""
    plain: Annotated[bool, tyro.conf.FlagCreatePairsOff, tyro.conf.arg(name="no-batch-norm")] = False
    """not a _bn variant (default: read from the file)"""


COMMAND = ConvertCommand  # what the command line parses (docs checked in tests/test_readme.py)


def main(argv=None) -> int:
    args = parse(ConvertCommand, argv, PROG, __doc__)
    from vgg_jax.weights import resolve

    if args.dst is None and args.serve is None:
        return fail(prog_name(PROG), "give DST, --serve OUT, or both")
    if args.batch_norm and args.plain:
        return fail(prog_name(PROG), "--batch-norm and --no-batch-norm contradict each other; pick one")
    batch_norm = True if args.batch_norm else False if args.plain else None
    config, preprocess = args.weights.config, args.weights.preprocess
    try:
        if args.dst is not None:
            named = resolve.export(args.src, args.dst, config, preprocess, batch_norm=batch_norm)
        else:
            named = resolve.resolve(args.src, config, preprocess, batch_norm=batch_norm)
        if args.serve is not None:
            from vgg_jax.weights import serve

            described = serve.export_serving(named, args.serve)
            print(
                f"{named.description} -> {args.serve} (serving: {described['input']}; {described['output']})"
            )
    except (ValueError, OSError) as error:  # a strict load's report (missing, unexpected, ...) as one line
        return fail(prog_name(PROG), error, config_class=ConvertCommand)
    return 0


if __name__ == "__main__":
    sys.exit(main())
