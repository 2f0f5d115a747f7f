"""dogbooth: fine-tune Stable Diffusion with DreamBooth and serve it with Ray Serve, laptop to EKS.

The package is layered; each layer imports only the ones below it (import-linter checks this in
`nox -s lint`, see the contracts in pyproject.toml and docs/architecture.md):

    cli                     argument parsing, one function per command
    commands/               what a command does end to end: train, pipeline, bench, reliability
    platforms/              where the stack runs: local Ray, kind, eks; the tools that reach them
    render/                 pure functions from a profile to documents (Serve config, chart, configs)
    settings/               the typed profile (pydantic only)
    core/                   errors, paths, YAML, the tools runner, polling

Kept import-light: the noxfile imports `dogbooth.bootstrap` with nothing but the standard library.
"""
