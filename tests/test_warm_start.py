"""`ssum train --init BUNDLE|CHECKPOINT`: a run starts from earlier weights, exactly."""

import pytest
import torch

from edge.errors import UserError
from ssum.cli import main
from trainer.models import fold_batchnorm
from trainer.presets import preset
from trainer.toy import write_toy_pairs
from trainer.train import Trainer, train
from trainer.warm_start import calibration_batch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_toy_pairs(tmp_path_factory.mktemp("pairs"), n=6, size=48, seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pairs):
    run = tmp_path_factory.mktemp("source") / "run"
    train(preset("tiny", epochs=1), pairs, run)
    return run / "checkpoints" / "last.pt"


def test_init_from_a_checkpoint_loads_every_network_exactly(tmp_path, pairs, checkpoint):
    source = torch.load(checkpoint, weights_only=False)["nets"]
    trainer = Trainer(preset("tiny", seed=5), pairs, tmp_path / "run", init=checkpoint)
    assert not torch.equal(trainer.raw["g_ab"].head[0].weight, source["g_ab"]["head.0.weight"])
    trainer.initialize()
    assert set(source) == set(trainer.raw) == {"g_ab", "g_ba", "d_a", "d_b"}
    for name, net in trainer.raw.items():
        mine = net.state_dict()
        assert mine.keys() == source[name].keys()
        assert all(torch.equal(mine[k], source[name][k]) for k in mine), name
    assert trainer.epoch == 0 and trainer.init_record["kind"] == "checkpoint"


def test_a_pix2pix_run_takes_only_the_generator_of_a_cyclegan_checkpoint(tmp_path, pairs, checkpoint):
    trainer = Trainer(preset("tiny", model="pix2pix"), pairs, tmp_path / "run", init=checkpoint)
    trainer.initialize()
    source = torch.load(checkpoint, weights_only=False)["nets"]["g_ab"]
    assert trainer.init_record["loaded"] == ["g_ab"]
    assert all(torch.equal(v, source[k]) for k, v in trainer.raw["g_ab"].state_dict().items())


def test_init_from_a_bundle_reproduces_its_generator(tmp_path, pairs, tiny_bundle):
    trainer = Trainer(preset("tiny"), pairs, tmp_path / "run", init=tiny_bundle)
    trainer.initialize()
    generator = trainer.raw["g_ab"]
    program = torch.export.load(str(tiny_bundle / "generator.pt2"))
    bundle_state = {k.removeprefix("net."): v for k, v in program.state_dict.items()}
    folded = fold_batchnorm(generator).state_dict()
    for key, value in bundle_state.items():  # the bundle's own weights, up to rounding
        torch.testing.assert_close(folded[key], value, rtol=1e-5, atol=1e-6)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = program.module()(x)
        got = (generator.eval()(x * 2 - 1) + 1) / 2
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert trainer.init_record["kind"] == "bundle" and trainer.init_record["loaded"] == ["g_ab"]


def test_unfolded_norms_hold_the_statistics_of_the_training_images(tmp_path, pairs, tiny_bundle):
    """Train-mode BatchNorm on the calibration images normalises by their own statistics: with
    the measured running statistics, that is the bundle's function again (dropout off)."""
    trainer = Trainer(preset("tiny"), pairs, tmp_path / "run", init=tiny_bundle)
    trainer.initialize()
    generator = trainer.raw["g_ab"]
    images = calibration_batch(trainer.dataset.pairs.osr)
    with torch.no_grad():
        expected = generator.eval()(images)
        generator.train()
        for module in generator.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        batch_normalised = generator(images)
    torch.testing.assert_close(batch_normalised, expected, rtol=0, atol=1e-3)


def test_a_mismatched_architecture_is_a_clear_error(tmp_path, pairs, checkpoint, tiny_bundle):
    wider = preset("tiny", gen_maps=16)
    for source in (checkpoint, tiny_bundle):
        trainer = Trainer(wider, pairs, tmp_path / source.name, init=source)
        with pytest.raises(UserError, match=r"8 maps and 1 residual blocks \(preset tiny\)"):
            trainer.initialize()
    trainer = Trainer(preset("tiny", disc_maps=16), pairs, tmp_path / "d", init=checkpoint)
    with pytest.raises(UserError, match="d_a has another architecture"):
        trainer.initialize()
    with pytest.raises(UserError, match="no such bundle folder or checkpoint"):
        Trainer(preset("tiny"), pairs, tmp_path / "x", init=tmp_path / "missing").initialize()


def test_cli_init_trains_from_a_bundle_and_records_it(tmp_path, pairs, tiny_bundle, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(pairs), "--out", str(run), "--preset", "tiny", "--epochs", "1",
            "--lr", "5e-5"]
    assert main(args + ["--init", str(tiny_bundle)]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state["training"]["init"]["kind"] == "bundle" and state["config"]["lr"] == 5e-5
    assert main(args + ["--init", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 2
    assert "--init" in capsys.readouterr().err
