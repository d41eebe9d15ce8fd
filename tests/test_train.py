import copy
import json
import math

import pytest
import torch

from edge.errors import UserError
from ssum.cli import main
from trainer.presets import preset
from trainer.steps import cyclegan_step, pix2pix_step
from trainer.toy import write_toy_pairs
from trainer.train import Trainer, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_toy_pairs(tmp_path_factory.mktemp("pairs"), n=6, size=48, seed=3)


def _fixed_batch(trainer):
    trainer.dataset.set_epoch(0)
    return {k: torch.stack([trainer.dataset[i][k] for i in range(2)]) for k in
            ("osr", "sem", "sem_paired")}


def _fixed_batch_losses(tmp_path, pairs, model, steps=25):
    cfg = preset("tiny", model=model, pool_size=0)
    trainer = Trainer(cfg, pairs, tmp_path / model)
    batch = _fixed_batch(trainer)
    step = cyclegan_step if model == "cyclegan" else pix2pix_step
    for net in trainer.nets.values():
        net.train()
    return [step(trainer.nets, trainer.optims, trainer.pools, batch, cfg) for _ in range(steps)]


def test_cyclegan_losses_finite_and_falling(tmp_path, pairs):
    history = _fixed_batch_losses(tmp_path, pairs, "cyclegan")
    assert all(math.isfinite(v) for row in history for v in row.values())
    for key in ("cycle_a", "cycle_b", "idt_a"):
        assert history[-1][key] < 0.7 * history[0][key]


def test_pix2pix_losses_finite_and_falling(tmp_path, pairs):
    history = _fixed_batch_losses(tmp_path, pairs, "pix2pix")
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert history[-1]["paired"] < 0.7 * history[0]["paired"]


def _norm_statistics(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k}


def test_cyclegan_keeps_each_generators_norm_statistics_to_its_own_domain(tmp_path, pairs):
    """After a step, g_ab's BatchNorm statistics are those of one pass over the real OSR batch
    and g_ba's of one pass over the real SEM batch: the cycle and identity passes, which feed
    them generated and other-domain images, leave the statistics used at inference alone."""
    cfg = preset("tiny", pool_size=0)
    trainer = Trainer(cfg, pairs, tmp_path / "run")
    batch = _fixed_batch(trainer)
    g_ab, g_ba = (copy.deepcopy(trainer.raw[k]).train() for k in ("g_ab", "g_ba"))
    before = _norm_statistics(g_ab)
    torch.manual_seed(11)
    with torch.no_grad():
        g_ab(batch["osr"]), g_ba(batch["sem"])
    torch.manual_seed(11)
    cyclegan_step(trainer.nets, trainer.optims, trainer.pools, batch, cfg)
    for reference, trained in ((g_ab, trainer.raw["g_ab"]), (g_ba, trainer.raw["g_ba"])):
        expected, got = _norm_statistics(reference), _norm_statistics(trained)
        for name in expected:
            assert torch.allclose(got[name].float(), expected[name].float()), name
    moved = _norm_statistics(g_ab)["head.1.running_mean"]
    assert not torch.allclose(before["head.1.running_mean"], moved)
    assert all(m.momentum == 0.1 for m in trainer.raw["g_ab"].modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def _final_state(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)


def _assert_identical(a, b):
    for key in ("nets", "optims"):
        flat_a, flat_b = _flatten(a[key]), _flatten(b[key])
        assert flat_a.keys() == flat_b.keys()
        for name in flat_a:
            assert torch.equal(flat_a[name], flat_b[name]), name


def _flatten(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}/{i}"))
    elif isinstance(tree, torch.Tensor):
        out[prefix] = tree
    return out


@pytest.mark.parametrize("model", ["cyclegan", "pix2pix"])
def test_resume_is_bit_exact(tmp_path, pairs, model):
    cfg = preset("tiny", model=model, epochs=2, paired_loss="shift-l1" if model == "cyclegan"
                 else None)
    train(cfg, pairs, tmp_path / "straight")
    train(cfg, pairs, tmp_path / "resumed", stop_after_epoch=1)
    assert _final_state(tmp_path / "resumed")["epoch"] == 1
    train(cfg, pairs, tmp_path / "resumed", resume=True)
    straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert resumed["epoch"] == straight["epoch"] == 2
    _assert_identical(straight, resumed)
    # and a run with another seed really differs (the comparison can fail)
    train(preset("tiny", model=model, epochs=1, seed=1), pairs, tmp_path / "other")
    other = _final_state(tmp_path / "other")
    assert not torch.equal(other["nets"]["g_ab"]["head.0.weight"],
                           straight["nets"]["g_ab"]["head.0.weight"])


def test_cli_trains_writes_run_and_refuses_to_overwrite(tmp_path, pairs):
    run = tmp_path / "run"
    args = ["train", "--data", str(pairs), "--out", str(run), "--preset", "tiny",
            "--epochs", "1", "--paired-loss", "blur-l1"]
    assert main(args) == 0
    assert (run / "checkpoints" / "best.pt").is_file()
    assert (run / "checkpoints" / "last.pt").is_file()
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and math.isfinite(record["val_psnr_db"])
    assert any((run / "tensorboard").iterdir())
    assert main(args) == 2  # existing run without --resume
    assert main(args + ["--resume"]) == 0  # already finished: nothing to do


def test_missing_folders_and_small_images_are_user_errors(tmp_path, pairs):
    with pytest.raises(UserError, match="osr/"):
        train(preset("tiny"), tmp_path, tmp_path / "run")
    with pytest.raises(UserError, match="smaller than --crop"):
        train(preset("tiny", crop=64), pairs, tmp_path / "run2")


def test_a_pair_whose_registration_locks_wrong_is_skipped_not_trained_on(pairs, monkeypatch,
                                                                         caplog):
    import trainer.data
    from trainer.data import load_pairs

    align = trainer.data.align_pair

    def lock_wrong_on_0002(osr, sem):
        third = float(sem.mean()) == wrong_mean  # the third pair, recognised by its SEM
        osr, sem, reg = align(osr, sem)
        if third:
            return osr[:, : sem.shape[1] // 3], sem[:, : sem.shape[1] // 3], reg
        return osr, sem, reg

    names = load_pairs(pairs).names
    wrong_mean = float(load_pairs(pairs).sem[2].mean())
    monkeypatch.setattr(trainer.data, "align_pair", lock_wrong_on_0002)
    registered = load_pairs(pairs, register=True)
    assert registered.names == [n for k, n in enumerate(names) if k != 2]
    assert f"pair {names[2]}: registration kept 3" in caplog.text
    monkeypatch.setattr(trainer.data, "align_pair",
                        lambda osr, sem: (osr[:8, :8], sem[:8, :8], None))
    with pytest.raises(UserError, match="no pair could be registered"):
        load_pairs(pairs, register=True)
