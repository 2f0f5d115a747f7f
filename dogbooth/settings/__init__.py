"""The typed profile: pydantic models only, no I/O beyond reading the profile file.

`profiles` is the root (`Profile`); `chart` and `cluster` are its `chart:` and `cluster:` sections,
`base` the strict model they all derive from. May import `dogbooth.core` and the replica's own
argument models (`services.schemas`, `services.models`), since `serve.app` *is* the app's arguments.
"""
