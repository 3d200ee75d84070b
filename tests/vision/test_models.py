"""vision_model: torchvision's body, the reference head, the reference splitter."""

import math

import pytest
import torch
import torchvision
from torch import nn

from lightning_accel.vision.models import ConcatPool2d, VisionModel, vision_model, vision_splitter


@pytest.fixture(scope="module")
def resnet34():
    return vision_model("resnet34", n_out=10)


def test_the_body_is_torchvision_resnet34_without_its_pooling_and_classifier(resnet34):
    reference = torchvision.models.resnet34(weights=None)
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert {k.removeprefix("body.") for k in resnet34.body.state_dict()} == expected
    assert resnet34[0] is resnet34.body and resnet34[1] is resnet34.head


def test_the_head_has_the_reference_layers_and_shapes(resnet34):
    kinds = [type(m) for m in resnet34.head]
    assert kinds == [
        ConcatPool2d,
        nn.Flatten,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
    ]
    head = resnet34.head
    assert head[2].num_features == 1024 and head[6].num_features == 512
    assert (head[4].in_features, head[4].out_features) == (1024, 512)
    assert (head[8].in_features, head[8].out_features) == (512, 10)
    assert (head[3].p, head[7].p) == (0.25, 0.5)
    assert head[4].bias is None and head[8].bias is None


def test_the_head_is_initialized_as_the_reference():
    torch.manual_seed(0)
    head = vision_model("resnet18", n_out=400).head
    for bn in (head[2], head[6]):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-3))
    # Kaiming normal, fan-in mode, ReLU gain: standard deviation sqrt(2 / fan_in).
    for linear in (head[4], head[8]):
        expected = math.sqrt(2 / linear.in_features)
        assert abs(linear.weight.std().item() / expected - 1) < 0.05
        assert abs(linear.weight.mean().item()) < 0.1 * expected


def test_concat_pool_puts_max_before_average():
    x = torch.randn(2, 3, 5, 4)
    expected = torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)[..., None, None]
    torch.testing.assert_close(ConcatPool2d()(x), expected)


def test_forward_gives_one_logit_per_class_at_any_size(resnet34):
    resnet34.eval()
    for size in (32, 64):
        assert resnet34(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_channels_last_gives_the_same_outputs(resnet34):
    resnet34.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = resnet34(x)
        model = resnet34.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    resnet34.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_the_resnet_splitter_gives_the_reference_three_groups(resnet34):
    groups = vision_splitter(resnet34)
    body = resnet34.body
    expected = [
        [*body.conv1.parameters(), *body.bn1.parameters()]
        + [*body.layer1.parameters(), *body.layer2.parameters()],
        [*body.layer3.parameters(), *body.layer4.parameters()],
        list(resnet34.head.parameters()),
    ]
    assert [[id(p) for p in g] for g in groups] == [[id(p) for p in g] for g in expected]


def test_other_architectures_split_into_body_and_head():
    model = vision_model("mobilenet_v3_small", n_out=3)
    assert isinstance(model, VisionModel)
    body, head = vision_splitter(model)
    assert {id(p) for p in body} == {id(p) for p in model.body.parameters()}
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_the_torchvision_head_keeps_torchvisions_model():
    model = vision_model("resnet18", n_out=7, head="torchvision")
    assert isinstance(model, torchvision.models.ResNet)
    assert model.fc.out_features == 7
    body, head = vision_splitter(model)
    assert [id(p) for p in head] == [id(model.fc.weight), id(model.fc.bias)]
    assert len(body) + len(head) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": "resnet35"}, "arch must be a torchvision classification model"),
        ({"head": "fastai"}, "head must be one of reference, torchvision"),
        ({"n_out": 0}, "n_out must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vision_model(**{"arch": "resnet18", "n_out": 10, **kwargs})


def test_the_splitter_refuses_foreign_models():
    with pytest.raises(ValueError, match="vision_model"):
        vision_splitter(nn.Linear(2, 2))
