"""torchvision architectures, randomly initialized, with the reference classification head."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import Tensor, nn

HEADS = ("reference", "torchvision")


class ConcatPool2d(nn.Module):
    """Adaptive max and average pooling concatenated along channels (max first, as the reference).

    Both statistics of the final feature map reach the head, at the cost of twice its input width.
    """

    def __init__(self, output_size: int = 1) -> None:
        super().__init__()
        self.max = nn.AdaptiveMaxPool2d(output_size)
        self.avg = nn.AdaptiveAvgPool2d(output_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.max(x), self.avg(x)], 1)


def reference_head(n_features: int, n_out: int, hidden: int = 512, p: float = 0.5) -> nn.Sequential:
    """The reference head: concat pool, then [BN, dropout p/2, linear, ReLU], [BN, dropout p,
    linear]. The linear layers have no bias (the batch norm before each provides it); linear
    weights are Kaiming-normal and batch-norm biases 1e-3, as the reference initializes them."""
    head = nn.Sequential(
        ConcatPool2d(),
        nn.Flatten(),
        nn.BatchNorm1d(2 * n_features),
        nn.Dropout(p / 2),
        nn.Linear(2 * n_features, hidden, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(p),
        nn.Linear(hidden, n_out, bias=False),
    )
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.constant_(module.bias, 1e-3)
    return head


class VisionModel(nn.Sequential):
    """`body` (the convolutional trunk) followed by `head`; `model[0]` and `model[1]` too."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head


def _body(arch: str, model: nn.Module) -> nn.Sequential:
    if hasattr(model, "fc") and hasattr(model, "avgpool"):  # ResNet, ResNeXt, Wide ResNet, RegNet
        # Keep torchvision's child names (conv1, layer1, ...) so state-dict keys stay readable.
        kept = [(name, m) for name, m in model.named_children() if name not in ("avgpool", "fc")]
        return nn.Sequential(OrderedDict(kept))
    if hasattr(model, "features") and hasattr(model, "classifier"):
        # DenseNet applies its final ReLU in forward(), outside `features`.
        extra = [nn.ReLU(inplace=True)] if arch.startswith("densenet") else []
        return nn.Sequential(*model.features, *extra)
    raise ValueError(
        f"arch {arch!r} has no convolutional body this function knows how to cut; use a ResNet, "
        "ResNeXt, Wide ResNet, RegNet, VGG, DenseNet, MobileNet, EfficientNet or ConvNeXt name"
    )


@torch.no_grad()
def _n_features(body: nn.Module) -> int:
    # One tiny forward pass is the only way that works for every architecture's last layer.
    was_training = body.training
    body.eval()
    try:
        return body(torch.zeros(1, 3, 64, 64)).shape[1]
    finally:
        body.train(was_training)


def _torchvision_model(arch: str, n_out: int | None) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"arch must be a torchvision classification model name such as 'resnet18', "
            f"'resnet34' or 'resnet50'; got {arch!r}"
        )
    kwargs = {} if n_out is None else {"num_classes": n_out}
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def vision_model(arch: str = "resnet34", n_out: int = 1000, head: str = "reference") -> nn.Module:
    """A randomly initialized torchvision `arch` with `n_out` outputs.

    `head="reference"` (default) replaces torchvision's pooling and classifier with the reference
    head and returns a `VisionModel(body, head)`; `head="torchvision"` returns torchvision's own
    model, with its own pooling and linear classifier sized for `n_out`. Split either into
    parameter groups with `vision_splitter`.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}; got {head!r}")
    if not isinstance(n_out, int) or n_out < 1:
        raise ValueError(f"n_out must be a positive integer; got {n_out!r}")
    if head == "torchvision":
        return _torchvision_model(arch, n_out)
    body = _body(arch, _torchvision_model(arch, None))
    return VisionModel(body, reference_head(_n_features(body), n_out))


def vision_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups for discriminative learning rates and freezing, the reference's way.

    A ResNet-family `VisionModel` gives three groups (stem to layer2, layer3 and layer4, head),
    any other `VisionModel` two (body, head), and a torchvision model two (everything but the
    classifier, the classifier).
    """
    if isinstance(model, VisionModel):
        names = [name for name, _ in model.body.named_children()]
        if "layer3" in names:
            cut = names.index("layer3")
            groups = [model.body[:cut], model.body[cut:], model.head]
        else:
            groups = [model.body, model.head]
        return [list(group.parameters()) for group in groups]
    classifier = getattr(model, "fc", None) or getattr(model, "classifier", None)
    if classifier is None:
        raise ValueError(
            f"vision_splitter needs a model made by vision_model(); got {type(model).__name__}"
        )
    head_ids = {id(p) for p in classifier.parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return [body, list(classifier.parameters())]
