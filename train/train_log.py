"""Where a run's losses go: ``logs/train_log.jsonl`` always, the installed trackers and a
progress bar when asked. Written by the main process; every rank joins the reduce."""
from __future__ import annotations

import json
import time
from pathlib import Path

LOG_FILE = "train_log.jsonl"
LOSS_TERMS = ("loss", "eps", "landmark", "parsing", "depth")


class TrainLog:
    def __init__(self, accelerator, cfg: dict, trackers: list[str], initial_step: int, lr: float):
        t = cfg["train"]
        self.accelerator, self.trackers = accelerator, trackers
        self.main = accelerator.is_main_process
        self.every, self.max_steps = int(t["log_every"]), int(t["max_steps"])
        if trackers:
            accelerator.init_trackers("dense_face", config={"lr": lr, "max_steps": self.max_steps})
        self.path = Path(cfg["output_dir"]) / "logs" / LOG_FILE
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bar = None
        if self.main and t["progress"]:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.max_steps, initial=initial_step, desc="dense-face train", dynamic_ncols=True)
        self.t_start = time.perf_counter()

    def start(self) -> None:
        """The clock of ``elapsed_s`` starts here (after the set-up)."""
        self.t_start = time.perf_counter()

    def after_step(self, state, sums, lr_scheduler) -> None:
        """Log the step's loss terms (mean over ranks) every ``log_every`` steps and at the last."""
        if state.step % self.every == 0 or state.step == self.max_steps:  # same on every rank
            means = self.accelerator.reduce(sums, reduction="mean")
            rec = {"step": state.step, **{k: float(v) for k, v in zip(LOSS_TERMS, means.tolist())},
                   "lr": float(lr_scheduler.get_last_lr()[0]),
                   "samples": state.step * state.samples_per_step * state.world_size,
                   "elapsed_s": round(time.perf_counter() - self.t_start, 3)}
            if self.main:
                self._write(rec)
        if self.bar is not None:
            self.bar.update(1)

    def _write(self, rec: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self.trackers:
            self.accelerator.log({k: v for k, v in rec.items() if k != "step"}, step=rec["step"])
        if self.bar is not None:
            self.bar.set_postfix({k: f"{rec[k]:.4f}" for k in LOSS_TERMS[:2]} | {"lr": f"{rec['lr']:.2e}"})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.trackers:
            self.accelerator.end_training()
