"""DreamBooth fine-tuning for dogbooth (docs/training.md).

Public entry points, for scripts and other tests:

- `python -m training --config local|a10g|FILE --output DIR [--max-train-steps N] [--checkpoint-every K]
  [--resume latest] ...`: one run in this process; exit 0 done, 1 dogbooth error, 130 interrupted.
- `training.checkpoints.list_checkpoints(DIR)`: the complete checkpoints of the run exporting to DIR.
- `training.run.run(config, resume=...)` with `training.config.load(name, overrides)`.

Kept import-light: heavy libraries load inside the functions that need them.
"""
