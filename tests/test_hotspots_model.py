"""Interaction Hotspots model: architecture facts, frozen ImageNet backbone, padded LSTM, IntCAM, checkpoints."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch
from torch import nn

from maskahand.core.config import HotspotsConfig
from maskahand.hotspots.checkpoint import load_checkpoint
from maskahand.hotspots.intcam import intcam
from maskahand.hotspots.model import HotspotsModel, build_model
from maskahand.runtime.weights import WeightsFileError, WeightsMismatchError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A torchvision resnet50 state dict (random init: the real ImageNet file cannot be downloaded here)."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50(weights=None)
    for m in net.modules():  # non-trivial BN statistics, so eval-mode BN is visible in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet50-imagenet.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(imagenet_file):
    torch.manual_seed(1)
    return build_model(HotspotsConfig(num_verbs=3, backbone_weights=str(imagenet_file)))


# -- backbone ------------------------------------------------------------------------------------------


def test_dilated_backbone_gives_28x28_at_224(model):
    with torch.no_grad():
        feats = model.features(torch.rand(1, 3, 224, 224))
    assert feats.shape == (1, 2048, 28, 28)
    # their dr50_n28: stride 1 in res4/res5, dilation on the first block only (2 then 4)
    l3, l4 = model.backbone.layer3, model.backbone.layer4
    assert [b.conv2.dilation[0] for b in l3] == [2, 1, 1, 1, 1, 1]
    assert [b.conv2.dilation[0] for b in l4] == [4, 1, 1]
    assert all(b.conv2.stride == (1, 1) for b in [*l3, *l4])


def test_every_block_dilation_variant():
    with torch.device("meta"):  # shapes only
        m = HotspotsModel(HotspotsConfig(num_verbs=2, dilation="every_block"))
        assert [b.conv2.dilation[0] for b in m.backbone.layer3] == [2] * 6
        assert [b.conv2.padding[0] for b in m.backbone.layer4] == [4] * 3
        assert m.features(torch.rand(1, 3, 64, 64)).shape == (1, 2048, 8, 8)


def test_backbone_loads_the_file_and_stays_frozen(model, imagenet_file):
    state = torch.load(imagenet_file, weights_only=True)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(model.backbone.bn1.running_var, state["bn1.running_var"])
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    try:
        assert not model.backbone.training
        assert all(not m.training for m in model.backbone.modules())
        assert model.anticipation.training  # the trainable BN does train
        before = model.backbone.layer1[0].bn1.running_mean.clone()
        model.features(torch.rand(2, 3, 32, 32) * 255)
        assert torch.equal(model.backbone.layer1[0].bn1.running_mean, before)
    finally:
        model.eval()


def test_missing_or_wrong_weights_fail_clearly(tmp_path):
    with pytest.raises(WeightsFileError, match="backbone_weights is not set"):
        build_model(HotspotsConfig())
    with pytest.raises(WeightsFileError, match="nope.pth: ImageNet weights file does not exist"):
        build_model(HotspotsConfig(backbone_weights=str(tmp_path / "nope.pth")))
    from torchvision.models import resnet18

    wrong = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(
        WeightsFileError, match=r"r18.pth: does not match a torchvision resnet50.*missing.*mis-shaped"
    ):
        build_model(HotspotsConfig(backbone_weights=str(wrong)))


# -- parameter counts by formula -------------------------------------------------------------------------


def resnet50_trunk_params() -> int:
    """ResNet-50 conv1..res5 (no fc), counted from the architecture's definition."""
    total = 3 * 64 * 7 * 7 + 2 * 64  # stem conv + BN
    inplanes = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out = 4 * width
        for i in range(blocks):
            total += inplanes * width + 2 * width  # 1x1 + BN
            total += 9 * width * width + 2 * width  # 3x3 + BN
            total += width * out + 2 * out  # 1x1 + BN
            if i == 0:
                total += inplanes * out + 2 * out  # projection shortcut + BN
            inplanes = out
    return total


def test_parameter_count_of_each_part():
    d, h, v = 2048, 2048, 7
    with torch.device("meta"):
        m = HotspotsModel(HotspotsConfig(num_verbs=v))

    def count(mod):
        return sum(p.numel() for p in mod.parameters())

    assert count(m.backbone) == resnet50_trunk_params() == 23_508_032
    assert count(m.lstm) == 4 * h * (d + h) + 2 * 4 * h  # W_ih, W_hh, two bias vectors
    assert count(m.classifier) == h * v + v
    assert count(m.anticipation) == 2 * (9 * d * d + d) + 2 * 2 * d  # two conv3x3 (+bias) and BN
    assert m.h0.numel() == m.c0.numel() == h
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == count(m) - count(m.backbone)


def test_l2_pooling_is_the_root_of_the_sum_of_squares(model):
    x = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    torch.testing.assert_close(model.pool(x), torch.tensor([[5.0, 2.0]]))


# -- LSTM over padded clips ----------------------------------------------------------------------------


def test_padded_clip_equals_running_it_alone(model):
    torch.manual_seed(2)
    frames = torch.rand(3, 4, 3, 32, 32)
    lengths = torch.tensor([4, 2, 1])
    with torch.no_grad():
        batch = model(frames, lengths).logits
        frames[1, 2:] = torch.rand(2, 3, 32, 32)  # the padding's content must not matter
        frames[2, 1:] = 1.0
        again = model(frames, lengths).logits
        for i, n in enumerate(lengths.tolist()):
            alone = model(frames[i : i + 1, :n], torch.tensor([n])).logits
            torch.testing.assert_close(batch[i], alone[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch, again, rtol=1e-4, atol=1e-5)
        # and the padded steps are really excluded: reading them changes the answer
        full = model(frames[1:2], torch.tensor([4])).logits
    assert not torch.allclose(full[0], batch[1], atol=1e-4)


def test_active_frame_is_the_most_confident_real_step(model):
    w = model.classifier.weight.detach()  # (verbs, hidden)
    steps = torch.zeros(2, 4, w.shape[1])
    steps[0, 1] = 50 * w[2]  # clip 0 (4 real steps): step 1 is the most confident of verb 2
    steps[1, 3] = 50 * w[0]  # clip 1 (2 real steps): the padded step 3 would win, step 0 is the best real one
    steps[1, 0] = 10 * w[0]
    pooled = torch.arange(8.0).view(2, 4, 1).expand(2, 4, 3)
    active, index = model._active_state(pooled, steps, torch.tensor([2, 0]), torch.tensor([4, 2]))
    assert index.tolist() == [1, 0]
    assert active[:, 0].tolist() == [1.0, 4.0]


def test_lengths_out_of_range_are_refused(model):
    with pytest.raises(ValueError, match="lengths must be in 1..2"):
        model.run_lstm(torch.rand(2, 2, 2048), torch.tensor([3, 1]))


# -- training losses -----------------------------------------------------------------------------------


def test_losses_mse_and_triplet(model):
    torch.manual_seed(3)
    frames, lengths = torch.rand(2, 3, 3, 32, 32), torch.tensor([3, 2])
    verbs, inactive, negative = torch.tensor([0, 2]), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    model.train()
    try:
        out = model(frames, lengths, verbs, inactive=inactive)
        assert set(out.terms) == {"cls", "ant", "aux"}
        assert (out.active_index < lengths).all()
        # the L2 term is 0.1 x the mean squared difference to the chosen frame's pooled features
        with torch.no_grad():
            pooled = model.pool(model.features(frames.flatten(0, 1))).view(2, 3, -1)
            active = pooled[torch.arange(2), out.active_index]
            anticipated = model.pool(model.anticipation(model.features(inactive)))
        torch.testing.assert_close(out.terms["ant"], 0.1 * (anticipated - active).pow(2).mean(1))
        # the auxiliary loss classifies the anticipated features with one LSTM step from the learned state
        with torch.no_grad():
            h0, c0 = model.h0.expand(1, 2, -1).contiguous(), model.c0.expand(1, 2, -1).contiguous()
            _, (hn, _) = model.lstm(anticipated.unsqueeze(1), (h0, c0))
            aux = torch.nn.functional.cross_entropy(model.classifier(hn[-1]), verbs, reduction="none")
        torch.testing.assert_close(out.terms["aux"], aux)
        torch.testing.assert_close(out.total, sum(t.mean() for t in out.terms.values()))
        out.total.backward()
        assert model.anticipation[0].conv.weight.grad is not None and model.h0.grad is not None
        model.zero_grad(set_to_none=True)

        model.cfg = replace(model.cfg, ant_loss="triplet")
        with pytest.raises(ValueError, match="needs negative images"):
            model(frames, lengths, verbs, inactive=inactive)
        with torch.no_grad():
            t = model(frames, lengths, verbs, inactive=inactive, negative=negative).terms["ant"]
            neg = model.pool(model.features(negative))
        unit = torch.nn.functional.normalize
        a, p, n = unit(anticipated, dim=1), unit(active, dim=1), unit(neg, dim=1)
        expected = torch.relu((a - p).norm(dim=1) - (a - n).norm(dim=1) + 0.5)
        torch.testing.assert_close(t, expected, rtol=1e-4, atol=1e-4)
    finally:
        model.cfg = replace(model.cfg, ant_loss="mse")
        model.eval()
        model.zero_grad(set_to_none=True)


# -- IntCAM --------------------------------------------------------------------------------------------


def test_intcam_maps_are_nonnegative_per_action_and_match_an_independent_gradient(model):
    torch.manual_seed(4)
    images = torch.rand(2, 3, 24, 24)
    maps = intcam(model, images)
    assert maps.shape == (2, 3, 3, 3)
    assert (maps >= 0).all() and maps.sum() > 0
    assert not torch.allclose(maps[:, 0], maps[:, 1]) and not torch.allclose(maps[:, 1], maps[:, 2])
    # independent computation: one backward with a one-hot gradient per (image, verb) replica
    with torch.no_grad():
        feats = model.features(images)
    rep = feats.repeat_interleave(3, 0).requires_grad_(True)
    logits = model.hotspot_logits(rep).view(2, 3, 3)
    (grad,) = torch.autograd.grad(logits.diagonal(dim1=1, dim2=2).sum(), rep)
    expected = torch.relu(grad * rep.detach()).sum(1).view(2, 3, 3, 3)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    # a subset of verbs, and an image's maps do not depend on the rest of the batch
    torch.testing.assert_close(intcam(model, images[1:], verbs=[2]), maps[1:, 2:], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        intcam(model, images, verbs=[3])


# -- their checkpoints ---------------------------------------------------------------------------------


class TheirFrameLSTM(nn.Module):
    """Built by their rules (models/rnn.py, models/backbones.py): only the module names and shapes matter."""

    def __init__(self, num_classes: int, hidden: int = 2048):
        super().__init__()
        from torchvision.models import resnet50

        rnet = resnet50(weights=None)
        del rnet.fc, rnet.avgpool  # their DilatedResNet has neither
        self.backbone = nn.Module()
        self.backbone.rnet = rnet
        self.rnn = nn.LSTM(2048, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)
        self.project = nn.Sequential(
            nn.Conv2d(2048, 2048, 3, padding=1),
            nn.BatchNorm2d(2048),
            nn.ReLU(True),
            nn.Conv2d(2048, 2048, 3, padding=1),
            nn.BatchNorm2d(2048),
            nn.ReLU(True),
        )
        self.h0 = nn.Parameter(torch.randn(1, 1, hidden))
        self.c0 = nn.Parameter(torch.randn(1, 1, hidden))


@pytest.fixture(scope="module")
def their_checkpoint(tmp_path_factory):
    with torch.device("meta"):
        theirs = TheirFrameLSTM(7)
    theirs.to_empty(device="cpu")
    with torch.no_grad():  # a distinct value per tensor: a swapped pair of same-shaped tensors shows
        for i, t in enumerate(theirs.state_dict().values()):
            t.fill_(i + 1)
    path = tmp_path_factory.mktemp("theirs") / "ckpt_E_20.pth"
    args = argparse.Namespace(dset="opra", max_len=8, batch_size=128)
    torch.save({"net": theirs.state_dict(), "args": args, "epoch": 20}, path)
    return path, theirs.state_dict()


def test_their_checkpoint_loads_every_tensor(their_checkpoint):
    path, state = their_checkpoint
    model = load_checkpoint(path, num_verbs=7)
    ours = model.state_dict()
    assert len(ours) == len(state) == 340
    explicit = {  # one tensor of each part, named by hand
        "backbone.rnet.conv1.weight": "backbone.conv1.weight",
        "backbone.rnet.layer3.5.bn2.running_var": "backbone.layer3.5.bn2.running_var",
        "rnn.weight_hh_l0": "lstm.weight_hh_l0",
        "rnn.bias_ih_l0": "lstm.bias_ih_l0",
        "fc.weight": "classifier.weight",
        "project.0.weight": "anticipation.0.conv.weight",
        "project.1.running_mean": "anticipation.0.bn.running_mean",
        "project.3.bias": "anticipation.1.conv.bias",
        "project.4.weight": "anticipation.1.bn.weight",
        "h0": "h0",
        "c0": "c0",
    }
    for theirs_name, ours_name in explicit.items():
        assert torch.equal(ours[ours_name], state[theirs_name]), theirs_name
    # every tensor arrives (each of theirs holds one distinct value)
    assert sorted(int(v.flatten()[0]) for v in ours.values()) == list(range(1, 341))
    assert not model.training


def test_their_checkpoint_mismatches_are_listed(their_checkpoint, tmp_path):
    path, state = their_checkpoint
    with pytest.raises(WeightsMismatchError, match=r"mis-shaped: fc.weight: checkpoint \(7, 2048\)"):
        load_checkpoint(path, num_verbs=20)
    broken = dict(state)
    del broken["project.3.weight"]
    broken["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"net": broken, "epoch": 1}, bad)
    with pytest.raises(
        WeightsMismatchError, match=r"1 missing: project.3.weight.*1 unexpected: extra.weight"
    ):
        load_checkpoint(bad, num_verbs=7)
    with pytest.raises(WeightsFileError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth", num_verbs=7)


def test_adamw_with_the_l2_term_equals_their_adam():
    from maskahand.hotspots.task import l2_penalty

    torch.manual_seed(6)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    theirs = torch.optim.Adam(a.parameters(), lr=0.1, weight_decay=0.05)
    ours = torch.optim.AdamW(b.parameters(), lr=0.1, weight_decay=0.0)
    x = torch.randn(4, 5)
    for _ in range(3):
        theirs.zero_grad()
        a(x).pow(2).sum().backward()
        theirs.step()
        ours.zero_grad()
        (b(x).pow(2).sum() + l2_penalty(b, 0.05)).backward()
        ours.step()
    torch.testing.assert_close(b.weight, a.weight)
    torch.testing.assert_close(b.bias, a.bias)
