"""The fine-tune pipeline (docs/pipeline.md): prepare -> train -> validate -> gate -> deploy.

- `steps`: the step functions; `score`: the subject-fidelity scorers; `deploy`: serve and wait.
- `local`: all steps in-process (`python -m dogbooth pipeline --profile local`).
- `argo`: the Argo Workflow that runs the chart's WorkflowTemplate `dogbooth-finetune` on a cluster.
- `python -m dogbooth.commands.pipeline <step>`: one step, as a WorkflowTemplate container runs it.

Kept import-light: torch, diffusers and the training recipe load inside the functions that need them.
"""
