import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_gravity.core import GravityConfig, GravityNet, gravity_points


def small(**kw):
    kw = {"backbone": "resnet18", "head_channels": 32, **kw}
    return GravityConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "shape"),
    [
        ({"step": 10}, (64, 96)),
        ({"step": 10}, (70, 33)),  # not a multiple of 32: padded
        ({"step": 4, "stride": 16}, (40, 50)),
        ({"step": 4, "stride": 8, "head_norm": "gn"}, (24, 20)),
        ({"step": 6, "layout": "uniform"}, (64, 64)),
        ({"step": 10, "in_channels": 3}, (32, 32)),
    ],
)
def test_output_shapes_match_gravity_points(kw, shape):
    cfg = small(**kw)
    model = GravityNet(cfg).eval()
    with torch.no_grad():
        logits, offsets = model(torch.rand(2, 1, *shape))
    n = len(gravity_points(shape, cfg.step, stride=cfg.stride, layout=cfg.layout))
    assert logits.shape == (2, n) and offsets.shape == (2, n, 2)
    gp = model.points_for(shape)
    assert gp.shape == (n, 2)
    np.testing.assert_allclose(
        gp.numpy(), gravity_points(shape, cfg.step, stride=cfg.stride, layout=cfg.layout), atol=1e-4
    )


class _CoordHead(nn.Module):
    """Fake head: channel a at feature cell (cy, cx) outputs the coordinate of the gravity
    point that (cy, cx, a) should be, computed independently of the reshape under test."""

    def __init__(self, offsets_1d, stride, which):
        super().__init__()
        self.off = offsets_1d
        self.stride = stride
        self.which = which  # "y" (cls) or "yx" (reg)

    def forward(self, feat):
        b, _, hf, wf = feat.shape
        n = len(self.off)
        out = torch.zeros(b, n * n * len(self.which), hf, wf)
        for cy in range(hf):
            for cx in range(wf):
                for iy in range(n):
                    for ix in range(n):
                        a = iy * n + ix
                        y = cy * self.stride + self.off[iy]
                        x = cx * self.stride + self.off[ix]
                        if self.which == "y":
                            out[:, a, cy, cx] = y
                        else:
                            out[:, 2 * a, cy, cx] = y
                            out[:, 2 * a + 1, cy, cx] = x
        return out


@pytest.mark.parametrize(
    ("stride", "step", "layout"), [(32, 10, "paper"), (16, 4, "paper"), (32, 6, "uniform")]
)
def test_output_index_i_is_gravity_point_i(stride, step, layout):
    from napari_gravity.core.gravity_points import window_offsets

    cfg = small(step=step, stride=stride, layout=layout)
    model = GravityNet(cfg).eval()
    off = window_offsets(step, stride=stride, layout=layout).tolist()
    model.cls_head = _CoordHead(off, stride, "y")
    model.reg_head = _CoordHead(off, stride, "yx")
    shape = (3 * stride - 5, 4 * stride)
    with torch.no_grad():
        logits, offsets = model(torch.zeros(1, 1, *shape))
    gp = gravity_points(shape, step, stride=stride, layout=layout)
    np.testing.assert_allclose(logits[0].numpy(), gp[:, 0])
    np.testing.assert_allclose(offsets[0].numpy(), gp)


def test_receptive_field_of_output_i_is_at_gravity_point_i():
    """A real network: the gradient of output i w.r.t. the input is centred in the window
    of gravity point i (checks the spatial side of the alignment, not just the reshape)."""
    torch.manual_seed(0)
    cfg = small(step=4, stride=8)
    model = GravityNet(cfg).eval()
    shape = (256, 256)  # large enough that the receptive field (~100 px) stays inside
    x = torch.rand(1, 1, *shape, requires_grad=True)
    logits, _ = model(x)
    gp = model.points_for(shape)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    cells = [(10, 20), (20, 10), (15, 16)]  # asymmetric: a transposed/shuffled order moves far
    for cy_cell, cx_cell in cells:
        for a in (0, 3):  # first and last point of the window
            i = (cy_cell * 32 + cx_cell) * 4 + a
            py, px = gp[i].tolist()
            assert (math.floor(py / 8), math.floor(px / 8)) == (cy_cell, cx_cell)
            (g,) = torch.autograd.grad(logits[0, i], x, retain_graph=True)
            w = g[0, 0].abs()
            cy = float((w * yy).sum() / w.sum())
            cx = float((w * xx).sum() / w.sum())
            # the receptive field's centroid lies within one stride of the point's window centre
            assert abs(cy - (cy_cell * 8 + 3.5)) < 8, (i, cy, py)
            assert abs(cx - (cx_cell * 8 + 3.5)) < 8, (i, cx, px)


def test_initialisation():
    cfg = small(step=10)
    model = GravityNet(cfg)
    prior = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(model.cls_head[-1].bias, torch.full((16,), prior))
    assert not model.reg_head[-1].weight.any() and not model.reg_head[-1].bias.any()
    with torch.no_grad():
        logits, offsets = model(torch.rand(1, 1, 64, 64))
    assert not offsets.any()
    assert abs(float(torch.sigmoid(logits).mean()) - 0.01) < 0.01
    # separate parameters for the two subnets, four 3x3 convs + output conv each
    convs = [m for m in model.cls_head if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5 and all(c.kernel_size == (3, 3) for c in convs)
    assert convs[0].in_channels == 512
    assert model.cls_head[0].weight.data_ptr() != model.reg_head[0].weight.data_ptr()
    assert "from scratch" in model.init_message


@pytest.mark.parametrize(
    ("backbone", "stride", "channels"),
    [("resnet18", 16, 256), ("resnet50", 32, 2048), ("resnet50", 8, 512)],
)
def test_truncation(backbone, stride, channels):
    step = 4 if stride < 32 else 10
    model = GravityNet(GravityConfig(backbone=backbone, stride=stride, step=step, head_channels=32))
    assert model.feature_channels == channels
    with torch.no_grad():
        f = model.features(torch.rand(1, 1, 64, 64))
    assert f.shape[-2:] == (64 // stride, 64 // stride)


def test_pretrained_local_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = GravityNet(small(step=10), pretrained=path)
    # grayscale conv1 = sum of the RGB kernels
    torch.testing.assert_close(model.backbone.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    assert str(path) in model.init_message
    # a torch.save file is read with weights_only=True
    pth = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), pth)
    GravityNet(small(step=10, in_channels=3), pretrained=pth)
    # wrong backbone's weights: clear error naming the file
    with pytest.raises(ValueError, match="r18"):
        GravityNet(GravityConfig(backbone="resnet50", head_channels=32), pretrained=path)
    with pytest.raises(FileNotFoundError):
        GravityNet(small(step=10), pretrained=tmp_path / "nope.pth")


def test_wrong_channels():
    model = GravityNet(small(step=10))
    with pytest.raises(ValueError, match="channel"):
        model(torch.rand(1, 3, 32, 32))
