"""What a command does end to end, on top of the platforms: `train` (the training glue), the
fine-tune `pipeline`, `bench` (its figures in `benchload`), `reliability`, and `loadgen`, the one
load generator that bench and reliability share.

May import everything below: `dogbooth.platforms`, `render`, `settings`, `core`, and `training/`.
Only `dogbooth.cli` (and `loadtest/`) import from here.
"""
