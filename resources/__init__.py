"""LungFuse's shipped data, installed as the package ``lungfuse.resources``.

``models/``: the weights with their SHA-256 ``manifest.json`` and the model card;
``demo/nodule_shapes.npz``: the demo phantom's nodule shapes.  Code finds this folder through
:func:`lungfuse.pipelines.core.resources.resources_dir` (``LUNGFUSE_RESOURCES`` overrides it).
"""
