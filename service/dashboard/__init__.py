"""The web dashboard (`/`): pending queue, history, a decision's story, rules; see `routes.py`."""

from service.dashboard.routes import router
from service.dashboard.standing import router as standing_router

router.include_router(standing_router)

__all__ = ["router"]
