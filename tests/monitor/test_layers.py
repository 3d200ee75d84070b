"""Layer groupings: which layer each parameter is reported under."""

import pytest

from lightning_accel.monitor.layers import by_depth, by_module, matching


def test_by_module_strips_the_parameter_name():
    assert by_module("layer1.0.conv1.weight") == "layer1.0.conv1"
    assert by_module("fc.bias") == "fc"
    # A parameter on the root module keeps its own name.
    assert by_module("scale") == "scale"


def test_by_depth_keeps_the_first_components_of_the_module_path():
    assert by_depth(1)("layer1.0.conv1.weight") == "layer1"
    assert by_depth(2)("layer1.0.conv1.weight") == "layer1.0"
    assert by_depth(5)("fc.weight") == "fc"


@pytest.mark.parametrize("depth", [0, -1, 1.5, "1"])
def test_by_depth_rejects_non_positive_depths(depth):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        by_depth(depth)


def test_matching_selects_and_then_groups():
    convs = matching(r"conv", then=by_depth(1))
    assert convs("layer1.0.conv1.weight") == "layer1"
    assert convs("layer1.0.bn1.weight") is None


def test_matching_rejects_a_broken_pattern():
    with pytest.raises(ValueError, match="pattern must be a valid regular expression"):
        matching("conv(")
