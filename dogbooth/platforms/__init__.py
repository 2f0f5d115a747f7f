"""Where the stack runs, and the tools that reach it: local Ray, kind, eks.

`local` runs Ray on this machine; `kind` and `eks` build ordered `plan`s of steps that `dispatch`
prints (dry run) or executes, after the `doctor`'s preflight (`doctorchecks` holds its Docker, GPU
and AWS checks); `kubesteps` holds the steps both cluster platforms share. `helm`, `kube`, `ecr`
wrap the tools and APIs; `devloop` and `reload` are the two live-reload loops (host and Tilt), and
`forward` and `roll` the helpers Tilt runs beside the app; `argo` and `trainjob` submit work to a
cluster. May import `dogbooth.render`, `dogbooth.settings` and `dogbooth.core`.
"""
