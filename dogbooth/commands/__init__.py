"""What a command does end to end, on top of the platforms: `train` (the training glue), the
fine-tune `pipeline`, `bench`, `reliability` and the shared load generator `benchload`.

May import everything below: `dogbooth.platforms`, `render`, `settings`, `core`, and `training/`.
Only `dogbooth.cli` (and `loadtest/`) import from here.
"""
