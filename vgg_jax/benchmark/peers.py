"""Peer implementations timed beside ours: torchvision's VGG, same work, same run."""

from __future__ import annotations

from typing import Callable

from vgg_jax.model.configs import TORCHVISION_NAMES

INSTALL_HINT = "pip install -e '.[torch]' (torch and torchvision)"


class PeerUnavailable(Exception):
    """The peer cannot run this case (not installed, or no such config); the message says why."""


def check_torch() -> None:
    """Raises PeerUnavailable, naming the extra to install, when torchvision is missing."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as error:  # ImportError, or a broken torch/torchvision pair
        raise PeerUnavailable(
            f"peers: torch needs torchvision, which did not import ({error}); install it with {INSTALL_HINT}"
        ) from error


class TorchVisionPeer:
    """torchvision's VGG for one config, batch, size, precision and mode.

    channels_last, autocast for bfloat16, random weights and N(0, 0.1) inputs
    (with `compile=True`, the model under `torch.compile`, default mode)
    on CUDA when JAX runs on a GPU and CUDA is there, else on the CPU. The modes
    do the same work as ours: eval forward under inference_mode; the gradient of
    l2_loss(fc8) with dropout on; cross-entropy plus SGD-momentum. torchvision
    pools to 7x7 before fc6, so the work matches ours exactly only at 224 pixels.
    """

    def __init__(
        self,
        config: str,
        batch_size: int,
        image_size: int,
        dtype: str,
        mode: str,
        num_classes: int,
        use_cuda: bool,
        compile: bool = False,
    ):
        check_torch()
        import torch
        import torchvision

        if config not in TORCHVISION_NAMES:
            raise PeerUnavailable(
                f"torchvision has no config {config} (it has {', '.join(TORCHVISION_NAMES)})"
            )
        self.torch = torch
        self.name = (
            f"torchvision.models.{TORCHVISION_NAMES[config]}{' torch.compile' if compile else ''} "
            f"{torch.__version__}"
        )
        self.device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            # fixed shapes: let cuDNN pick its fastest kernels, as users do
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        model = getattr(torchvision.models, TORCHVISION_NAMES[config])(weights=None, num_classes=num_classes)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.module = self.model
        if compile:  # compiled lazily, by the first (warm-up) step
            self.model = torch.compile(self.model)
        self.images = (
            0.1 * torch.randn(batch_size, 3, image_size, image_size, device=self.device)
        ).contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, num_classes, (batch_size,), device=self.device)
        self.autocast = lambda: torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"
        )
        # train.py's optimiser: SGD, momentum 0.9, L2 decay 5e-4 on the kernels (ndim > 1) only
        kernels = [p for p in self.module.parameters() if p.ndim > 1]
        others = [p for p in self.module.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.SGD(
            [{"params": kernels, "weight_decay": 5e-4}, {"params": others, "weight_decay": 0.0}],
            lr=1e-2,
            momentum=0.9,
        )
        self._run: Callable[[], None] = {
            "forward": self._forward,
            "forward_backward": self._forward_backward,
            "train_step": self._train_step,
        }[mode]

    def _forward(self) -> None:
        self.model.eval()
        with self.torch.inference_mode(), self.autocast():
            self.model(self.images)

    def _forward_backward(self) -> None:
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        with self.autocast():
            fc8 = self.model(self.images)
        (0.5 * fc8.float().pow(2).sum()).backward()

    def _train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.model(self.images)
        self.torch.nn.functional.cross_entropy(logits.float(), self.labels).backward()
        self.optimizer.step()

    def step(self) -> None:
        """One step, finished on the device before it returns."""
        self._run()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
