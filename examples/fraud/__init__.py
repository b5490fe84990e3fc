"""The fraud-scoring example: plan.yaml, its logic (logic.py) and a data builder."""
