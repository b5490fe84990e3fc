"""meshserve.orchestrator: executes composition plans over the model mesh.

Control side and engine: ``plans`` (parse/validate), ``compiled``, ``engine`` with one executor
module per step kind in ``steps``, ``programmatic`` (handles for Python plans), ``store`` (plans
and traffic policies in Consul KV), ``admin`` + ``servicers`` + ``converters`` + ``auth`` (gRPC),
``server`` and ``cli`` (the process). Models are reached only through ``caller.ModelCaller``
(``datapath.MeshCaller`` in production, ``inprocess.InProcessCaller`` as the in-process floor);
business logic lives in ``logic``, online learning in ``learning`` (the engine's ``Learning``
port is ``learning_port``).
"""
