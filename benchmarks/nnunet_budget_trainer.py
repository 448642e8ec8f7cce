"""nnU-Net's own trainer in a time budget, for scripts/benchmark_nnunet.py.

Installed into nnU-Net's trainer folder of benchmarks/.venv-nnunet (where nnU-Net finds
trainers by name). 50 training iterations an epoch (nnU-Net: 250) and 10 validation ones (50),
so that a CPU budget holds several epochs; after the second epoch the poly learning-rate
schedule is fitted to the epochs that fit `FLEXSEG_BUDGET_S` seconds at the pace of the
first two; no epoch starts that would not end inside the budget at that pace, and an epoch
that reaches the budget is cut short there. nnU-Net's scoring of its validation cases after
training is left out (the benchmark scores the test cases).
"""

import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

CPU = torch.device("cpu")


class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    def __init__(self, plans, configuration, fold, dataset_json, device=CPU):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 10
        self.budget_s = float(os.environ.get("FLEXSEG_BUDGET_S", "1800"))

    def run_training(self):
        start = time.monotonic()
        self.on_train_start()
        first = epoch = self.current_epoch
        while epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                outputs.append(self.train_step(next(self.dataloader_train)))
                if time.monotonic() - start > self.budget_s:
                    break  # an epoch longer than the budget ends with it
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                outputs = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]  # fmt: skip
                self.on_validation_epoch_end(outputs)
            self.on_epoch_end()
            epoch += 1
            pace = (time.monotonic() - start) / (epoch - first)
            if epoch - first == 2:  # the schedule's length: the epochs that fit
                fits = max(epoch, int(self.budget_s / pace))
                self.num_epochs = min(self.num_epochs, fits)
                self.lr_scheduler.max_steps = self.num_epochs
            if time.monotonic() - start + pace > self.budget_s:
                break
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Left out: nnU-Net's own scoring of the validation cases after training, which
        takes minutes on a CPU; the benchmark scores the test cases with flexseg-evaluate."""
        self.print_to_log_file("validation after training left out (the benchmark scores test)")
