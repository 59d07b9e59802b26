"""Data-parallel training of the character model with the PyTorch drop-in (interop.torch_rnn.RNN) and
torch.nn.parallel.DistributedDataParallel: one process without torchrun, N processes under it.

    python -m demo.ddp --iterations 200                                   # one process
    torchrun --standalone --nproc_per_node 2 -m demo.ddp --iterations 200 # two: `make demo DDP=2`

The text's --batch parallel streams are split between the processes (each runs batch / world of them), so every
step trains on the same characters whatever the number of processes; DDP averages the gradients (gloo on the CPU,
NCCL when every process has a GPU). Truncated BPTT over chunks of --seq characters with the state carried across
chunks, Adam. Rank 0 prints the loss and the measured throughput (characters per second, all processes).
"""
import argparse
import os
import time

import torch

from demo.text import stdlib_text
from interop.torch_rnn import RNN


class CharModel(torch.nn.Module):
    """One-hot characters -> RNN with any activation -> a linear layer to logits."""

    def __init__(self, vocab, hidden, activation):
        super().__init__()
        self.vocab = vocab
        self.rnn = RNN(vocab, hidden, nonlinearity=activation)
        self.out = torch.nn.Linear(hidden, vocab)

    def forward(self, chars, h):
        out, h = self.rnn(torch.nn.functional.one_hot(chars, self.vocab).float(), h)
        return self.out(out), h


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo.ddp", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--activation", default="tanh", help="a catalogue name or an expression in x")
    p.add_argument("--iterations", type=int, default=200, help="training steps")
    p.add_argument("--hidden", type=int, default=128, help="hidden size H")
    p.add_argument("--seq", type=int, default=50, help="truncated-BPTT chunk length")
    p.add_argument("--batch", type=int, default=16, help="parallel streams of the text, over all processes")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    args = p.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    device = torch.device("cpu")
    if distributed:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the number of processes, {world}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or max(1, (os.cpu_count() or 1) // world))

    text = stdlib_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text])
    stream = len(data) // args.batch
    mine = args.batch // world
    streams = data[: stream * args.batch].reshape(args.batch, stream)[rank * mine:(rank + 1) * mine]

    torch.manual_seed(args.seed)
    model = CharModel(len(chars), args.hidden, args.activation).to(device)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    h = torch.zeros(1, mine, args.hidden, device=device)
    pos, smooth, start = 0, None, time.perf_counter()
    for i in range(1, args.iterations + 1):
        if pos + args.seq + 1 > stream:
            pos, h = 0, torch.zeros_like(h)
        chunk = streams[:, pos:pos + args.seq + 1].T.to(device)  # (seq + 1, streams)
        logits, h = model(chunk[:-1], h.detach())
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(chars)), chunk[1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        pos += args.seq
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if rank == 0 and (i % 50 == 0 or i == args.iterations):
            seconds = time.perf_counter() - start
            print(f"step {i:5d}  loss {smooth:.3f}  {i * args.seq * args.batch / seconds:,.0f} characters/s "
                  f"({world} process{'es' if world > 1 else ''}, {device.type})", flush=True)
    if distributed:
        torch.distributed.barrier()  # tear gloo down together: a rank leaving first can abort its peer's teardown
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
