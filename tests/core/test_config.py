import pytest

from napari_gravity.core import GravityConfig


def test_defaults_are_the_papers():
    c = GravityConfig()
    assert (c.backbone, c.step, c.stride, c.layout, c.d_h) == ("resnet34", 10, 32, "paper", 10.0)
    assert c.normalization == "minmax" and c.head_norm is None and c.head_channels == 256
    assert c.points_per_window == 16


def test_hooking_distance():
    assert GravityConfig(step=6).d_h == 6.0
    assert GravityConfig(step=6, hooking_distance=8).d_h == 8.0


def test_round_trip():
    c = GravityConfig(backbone="resnet18", step=4, stride=8, head_norm="gn", nms_box=3)
    d = c.to_dict()
    assert GravityConfig.from_dict(d) == c
    assert c.replace(step=5).step == 5


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"'bakcbone'.*'colour'|'colour'.*'bakcbone'"):
        GravityConfig.from_dict({"bakcbone": "resnet18", "colour": 1})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"backbone": "vgg16"}, "backbone"),
        ({"stride": 4}, "stride"),
        ({"step": 31}, "step"),
        ({"step": 0}, "step"),
        ({"step": 7, "stride": 8}, "step"),
        ({"step": 2.5}, "step"),
        ({"hooking_distance": -1}, "hooking_distance"),
        ({"layout": "hex"}, "layout"),
        ({"in_channels": 2}, "in_channels"),
        ({"head_norm": "bn"}, "head_norm"),
        ({"head_channels": 0}, "head_channels"),
        ({"nms_box": 0}, "nms_box"),
        ({"nms_iou": 1.5}, "nms_iou"),
        ({"threshold": 2}, "threshold"),
        ({"normalization": "zscore"}, "normalization"),
    ],
)
def test_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        GravityConfig(**kw)


def test_step_bound_depends_on_stride():
    GravityConfig(stride=16, step=14)
    GravityConfig(stride=8, step=6)
    with pytest.raises(ValueError, match="K-2 = 14"):
        GravityConfig(stride=16, step=15)


def test_a_bad_field_is_named_by_the_error_itself():
    from napari_gravity.core.config import ConfigFieldError

    with pytest.raises(ConfigFieldError) as info:
        GravityConfig(step=99, stride=8)
    assert info.value.field == "step" and "K-2" in info.value.detail
    assert str(info.value).startswith("GravityConfig.step: ")
    assert isinstance(info.value, ValueError)  # callers catching ValueError still do
