"""The web dashboard (`/`): pending queue, history, a decision's story, rules (`routes.py`); sign-in through the
team's identity provider (`oidc_sign_in.py`)."""

from service.dashboard.oidc_sign_in import router as _oidc_router
from service.dashboard.routes import router
from service.dashboard.standing import router as standing_router

router.include_router(standing_router)

router.include_router(_oidc_router)

__all__ = ["router"]
