"""Pure functions from a profile to documents: no subprocess, no cluster, no network.

`serveconfig` (the Serve config that local deploys and the chart embeds), `chart` (Helm values and
the real Helm engine's render), `clusterconfig` (ctlptl and eksctl documents), `releases` (the
add-on Helm releases), `jupyterhub` and `argo` (their values and objects), `k8svalidate` (schema
checks of what was rendered). May import `dogbooth.settings` and `dogbooth.core`.
"""
