"""The bottom layer: errors, paths, YAML reading, the external-tools runner, polling.

May import nothing of dogbooth above it, and nothing of services/ or training/. `paths` is standard
library only, because the noxfile reaches it through `dogbooth.bootstrap` before any install.
"""
