"""The orchestrator's HTTP/JSON ingress (app.py), its plan JSON mapping (plan_json.py), the
OpenAPI document generated from it (openapi.py) and the offline docs page (docs.py)."""
