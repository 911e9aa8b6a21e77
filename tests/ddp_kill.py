"""`cpfd` as torchrun starts it, except that rank R kills itself (SIGKILL) at its optimizer step K:
a process lost in the middle of a job (out of memory, a node gone). Used by tests/pipeline/test_distributed.py:

    CPFD_TEST_KILL=1:7 torchrun --nproc-per-node 2 tests/ddp_kill.py train-student ...
"""

import os
import signal

import torch

from cpfd.cli import main

rank, step = (int(v) for v in os.environ["CPFD_TEST_KILL"].split(":"))
if int(os.environ["RANK"]) == rank:
    real_step, done = torch.optim.AdamW.step, [0]

    def step_then_die(self, *args, **kwargs):
        done[0] += 1
        if done[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, *args, **kwargs)

    torch.optim.AdamW.step = step_then_die

main()
