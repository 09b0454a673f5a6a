"""Example apps for minicelery (``python -m minicelery -A examples.tasks worker``)."""
