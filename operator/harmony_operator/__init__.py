"""The Harmony operator: SpeechModel and SpeechRoute custom resources -> model services and router config.

``handlers`` holds the thin kopf handlers; ``manifests`` and ``status`` are pure
functions from a spec to Kubernetes objects and status; ``reconcile`` ties them to
the API through ``kube``. Run it with
``kopf run --standalone -m harmony_operator.handlers --namespace NS`` (or ``-A``).
"""
