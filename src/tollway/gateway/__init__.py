"""The gateway: its request path (`pipeline.py`), the per-request record (`call.py`),
where a model name leads (`routes.py`), the ledger row (`record.py`), and the object
that assembles and owns it all (`assembly.py`)."""

from tollway.gateway.assembly import Gateway

__all__ = ["Gateway"]
