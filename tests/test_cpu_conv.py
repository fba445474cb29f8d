"""The pose branch's CPU convolution path (dense_face_core.cpu_conv): same numbers as F.conv2d
within float32 rounding, same gradients, and F.conv2d wherever the path does not apply."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dense_face.dense_face_core.cpu_conv import Conv2d, torch_default_convs, uses_im2col
from dense_face.dense_face_core.pose_branch import PoseBranch
from dense_face.dense_face_core.random_weights import fill_random_

# the branch's layer kinds: 3x3, 3x3 stride 2 (Downsample), 1x1 (skip and zero convs), the 4-channel input conv
LAYERS = [(64, 64, 3, 1), (64, 64, 3, 2), (64, 128, 1, 1), (4, 32, 3, 1)]


@pytest.mark.parametrize("cin,cout,k,stride", LAYERS)
def test_im2col_matches_float64_conv(cin, cout, k, stride):
    torch.manual_seed(0)
    conv = Conv2d(cin, cout, k, stride=stride, padding=k // 2).requires_grad_(False)
    x = torch.randn(1, cin, 5, 5)  # 25 output pixels or fewer: the weights outweigh the columns
    assert uses_im2col(conv, x)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), stride, k // 2)
    got = conv(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert not torch.equal(got, torch.zeros_like(got))


def test_training_keeps_f_conv2d_and_its_gradients():
    """With gradients wanted the layer is plain nn.Conv2d (the im2col backward refuses DDP's bucket views)."""
    torch.manual_seed(1)
    conv = Conv2d(8, 16, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 7, 7, requires_grad=True)  # 16 output pixels for 16 channels
    assert not uses_im2col(conv, x) and not uses_im2col(conv, x.detach())
    with torch.no_grad():
        assert uses_im2col(conv, x)
    conv(x).square().sum().backward()
    ours = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    x.grad, conv.weight.grad, conv.bias.grad = None, None, None
    F.conv2d(x, conv.weight, conv.bias, 2, 1).square().sum().backward()
    for a, b in zip(ours, (x.grad, conv.weight.grad, conv.bias.grad)):
        assert torch.equal(a, b)


@torch.inference_mode()
def test_falls_back_where_the_path_does_not_apply():
    conv = Conv2d(4, 36, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)  # 36 output pixels
    assert uses_im2col(conv, x) and not uses_im2col(Conv2d(4, 35, 3, padding=1), x)
    assert uses_im2col(Conv2d(4, 9, 3, padding=1, stride=2), x)  # 3x3 output pixels
    assert not uses_im2col(conv.to(torch.bfloat16), x.bfloat16())
    conv = conv.float()
    assert not uses_im2col(Conv2d(4, 36, 3, padding=1, groups=2), x)
    assert not uses_im2col(Conv2d(4, 36, 3, padding="same"), x)
    assert not uses_im2col(Conv2d(4, 36, 3, padding=1, padding_mode="reflect"), x)
    with FlopCounterMode(display=False) as counter:  # FLOP counting sees the ops of F.conv2d
        assert not uses_im2col(conv, x)
        conv(x)
    assert counter.get_total_flops() == 2 * 36 * 36 * 4 * 9
    assert conv.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


def test_pose_branch_on_both_paths_agrees_and_keeps_its_keys():
    torch.manual_seed(2)
    branch = fill_random_(PoseBranch(model_channels=32, channel_mult=(1, 2), num_res_blocks=1), seed=3).eval()
    plain_keys = set(PoseBranch(model_channels=32, channel_mult=(1, 2), num_res_blocks=1).state_dict())
    assert set(branch.state_dict()) == plain_keys
    x, hint, t = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64), torch.tensor([400.0])
    with torch.inference_mode():
        ours = branch(x, hint, t)
        with torch_default_convs(branch):
            assert not any(type(m) is Conv2d for m in branch.modules())
            theirs = branch(x, hint, t)
    assert sum(type(m) is Conv2d for m in branch.modules()) > 10  # swapped back
    for a, b in zip(ours, theirs):
        assert a.abs().max() > 0
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_bench_pose_branch_runs_and_reports_both_paths():
    """``dense-face bench pose-branch --smoke`` (tiny geometry, one timed call): its table and last line."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dense_face.cli", "bench", "pose-branch", "--sizes", "64",
                           "--repeats", "1", "--layer-repeats", "1", "--smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("ratios: core_vs_default_64=") and len(lines[-1].split()) == 2
    row = next(line for line in lines if line.strip().startswith("64x64"))
    errors = [float(e) for e in row.split()[-3::2]]  # "core / default" relative errors vs float64
    assert all(0 < e < 1e-4 for e in errors), row
    layers = [line for line in lines if " core " in line and " default " in line]
    assert len(layers) >= 8 and any("im2col" in line for line in layers) and any("F.conv2d" in line for line in layers)
