"""Two CPU processes (gloo) train the tiny model with DistributedDataParallel."""

import os

import torch
import torch.multiprocessing as mp

from edge.tools.supervise import free_port
from trainer.presets import preset
from trainer.toy import write_toy_pairs


def _worker(rank: int, world: int, port: int, data: str, out: str, model: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    from trainer import distributed
    from trainer.train import Trainer

    trainer = Trainer(preset("tiny", model=model, epochs=1), data, out)
    try:
        trainer.run()
        states = {k: v.state_dict() for k, v in trainer.raw.items()}
        torch.save({"states": states, "steps": trainer.step}, f"{out}/rank{rank}.pt")
    finally:
        distributed.teardown(trainer.info)


def _run(tmp_path, model):
    data = write_toy_pairs(tmp_path / "pairs", n=9, size=40, seed=2)
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(data), str(out), model), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


def test_two_ranks_end_with_identical_weights(tmp_path):
    (r0, r1), out = _run(tmp_path, "cyclegan")
    assert r0["steps"] == r1["steps"] == 2  # 8 training pairs, 2 ranks, batch 2
    for net, state in r0["states"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, r1["states"][net][name]), f"{net}.{name}"
    assert (out / "checkpoints" / "last.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # only rank 0 writes
