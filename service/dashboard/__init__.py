"""The web dashboard (`/`): pending queue, history, a decision's story, rules; see `routes.py`."""

from service.dashboard.routes import router

__all__ = ["router"]
